"""``TENANTMAIL["WEBHOOKS"]``: parsed lazily, cached.

Kept out of the core ``tenantmail.conf`` (which only lists the two keys as known) so the core does
not depend on this subpackage. Re-read after ``setting_changed`` like the core settings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS
from django.core.signals import setting_changed
from django.dispatch import receiver

from ..exceptions import TenantMailConfigurationError

#: Where Amazon SNS serves the certificates it signs messages with (AWS documents the host;
#: the .cn suffix covers the China regions).
DEFAULT_SNS_CERT_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]+\.pem$"

_WEBHOOK_KEYS = frozenset(
    {
        "MAILGUN_MAX_AGE",
        "REPLAY_CACHE",
        "SNS_CERT_URL_PATTERN",
        "SNS_CA_BUNDLE",
        "SNS_CERT_TIMEOUT",
    }
)


@dataclass(frozen=True)
class WebhookSettings:
    #: Reject Mailgun webhooks whose signed timestamp is older (or newer) than this many seconds.
    mailgun_max_age: float | None = 600.0
    sns_cert_url_pattern: re.Pattern[str] = re.compile(DEFAULT_SNS_CERT_URL_PATTERN)
    #: ``requests``' ``verify=``: True (system CAs) or the path of a CA bundle.
    sns_ca_bundle: bool | str = True
    sns_cert_timeout: float = 5.0
    #: The ``CACHES`` alias remembering used Mailgun signatures (see :mod:`.replay`).
    replay_cache: str = DEFAULT_CACHE_ALIAS


def _error(key: str, message: str) -> TenantMailConfigurationError:
    return TenantMailConfigurationError(message, setting=f'TENANTMAIL["{key}"]')


def _seconds(raw: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _error(f'WEBHOOKS"]["{key}', "must be a number of seconds (or None to disable)")
    if value <= 0:
        raise _error(f'WEBHOOKS"]["{key}', "must be > 0 (or None to disable)")
    return float(value)


def load_webhook_settings() -> WebhookSettings:
    raw = getattr(settings, "TENANTMAIL", {})
    if not isinstance(raw, Mapping):
        raise TenantMailConfigurationError("must be a dict", setting="TENANTMAIL")
    hooks = raw.get("WEBHOOKS", {})
    if not isinstance(hooks, Mapping):
        raise _error("WEBHOOKS", "must be a dict")
    unknown = set(hooks) - _WEBHOOK_KEYS
    if unknown:
        raise _error(
            "WEBHOOKS", f"unknown keys {sorted(unknown)}; expected some of {sorted(_WEBHOOK_KEYS)}"
        )
    pattern = hooks.get("SNS_CERT_URL_PATTERN", DEFAULT_SNS_CERT_URL_PATTERN)
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as error:
        raise _error('WEBHOOKS"]["SNS_CERT_URL_PATTERN', "must be a regular expression") from error
    bundle = hooks.get("SNS_CA_BUNDLE", True)
    if bundle is not True and not (isinstance(bundle, str) and bundle):
        raise _error('WEBHOOKS"]["SNS_CA_BUNDLE', "must be True (system CAs) or a CA bundle path")
    timeout = _seconds(hooks, "SNS_CERT_TIMEOUT", 5.0)
    replay_cache = hooks.get("REPLAY_CACHE", DEFAULT_CACHE_ALIAS)
    if not isinstance(replay_cache, str) or replay_cache not in settings.CACHES:
        raise _error(
            'WEBHOOKS"]["REPLAY_CACHE',
            f"must be an alias in CACHES ({', '.join(sorted(settings.CACHES))})",
        )
    return WebhookSettings(
        mailgun_max_age=_seconds(hooks, "MAILGUN_MAX_AGE", 600.0),
        sns_cert_url_pattern=compiled,
        sns_ca_bundle=bundle,
        sns_cert_timeout=5.0 if timeout is None else timeout,
        replay_cache=replay_cache,
    )


@cache
def get_webhook_settings() -> WebhookSettings:
    return load_webhook_settings()


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "TENANTMAIL":
        get_webhook_settings.cache_clear()
