"""Typed, lazy access to ``settings.TENANTMAIL``.

Settings are read on first use, never at import time, and re-read after Django's
``setting_changed`` signal (``override_settings`` in tests), so the library can be imported
before settings are configured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar, cast

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_tenants.utils import get_public_schema_name, get_tenant_database_alias

from .exceptions import TenantMailConfigurationError
from .subaccounts import SUBACCOUNT_BACKENDS, parse_subaccounts

#: Short names a tenant may use in ``mail_backend`` instead of a dotted path.
BACKEND_ALIASES: Mapping[str, str] = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "amazon_ses": "anymail.backends.amazon_ses.EmailBackend",
    "brevo": "anymail.backends.brevo.EmailBackend",
    "mailersend": "anymail.backends.mailersend.EmailBackend",
    "mailgun": "anymail.backends.mailgun.EmailBackend",
    "mailjet": "anymail.backends.mailjet.EmailBackend",
    "mailtrap": "anymail.backends.mailtrap.EmailBackend",
    "mandrill": "anymail.backends.mandrill.EmailBackend",
    "postal": "anymail.backends.postal.EmailBackend",
    "postmark": "anymail.backends.postmark.EmailBackend",
    "resend": "anymail.backends.resend.EmailBackend",
    "scaleway": "anymail.backends.scaleway.EmailBackend",
    "sendgrid": "anymail.backends.sendgrid.EmailBackend",
    "sparkpost": "anymail.backends.sparkpost.EmailBackend",
    "unisender_go": "anymail.backends.unisender_go.EmailBackend",
    # Sub-account mode (tenantmail.esp): safe to allow, as they send only for a tenant whose
    # operator-only mail_subaccount is set, and only once TENANTMAIL["SUBACCOUNTS"] is.
    **SUBACCOUNT_BACKENDS,
}

#: Options a tenant *must* set for each backend. Without them Anymail (and Django's SMTP backend
#: before 6.1) silently fall back to the platform's settings -- e.g. ``ANYMAIL["MAILGUN_API_KEY"]``
#: -- which would send the platform's credential to whatever ``api_url`` the tenant chose.
REQUIRED_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "django.core.mail.backends.smtp.EmailBackend": ("host",),
    # The tenant's own AWS keys (session_params' aws_access_key_id/aws_secret_access_key, checked
    # by tenantmail.isolation): without them boto3 finds the platform's AWS identity.
    "anymail.backends.amazon_ses.EmailBackend": ("session_params",),
    "anymail.backends.brevo.EmailBackend": ("api_key",),
    "anymail.backends.mailersend.EmailBackend": ("api_token",),
    "anymail.backends.mailgun.EmailBackend": ("api_key",),
    "anymail.backends.mailjet.EmailBackend": ("api_key", "secret_key"),
    "anymail.backends.mailtrap.EmailBackend": ("api_token",),
    "anymail.backends.mandrill.EmailBackend": ("api_key",),
    "anymail.backends.postal.EmailBackend": ("api_key", "api_url"),
    "anymail.backends.postmark.EmailBackend": ("server_token",),
    "anymail.backends.resend.EmailBackend": ("api_key",),
    "anymail.backends.scaleway.EmailBackend": ("secret_key", "project_id"),
    "anymail.backends.sendgrid.EmailBackend": ("api_key",),
    "anymail.backends.sparkpost.EmailBackend": ("api_key",),
    "anymail.backends.unisender_go.EmailBackend": ("api_key", "api_url"),
}

MissingConfig = Literal["default", "raise"]
#: What a send with no tenant context at all does (see tenancy.current_tenant).
Unresolved = Literal["platform", "raise"]
#: What a send to an address on the tenant's suppression list does (see tenantmail.suppression).
SuppressionMode = Literal["off", "drop", "raise"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class PlatformDefault:
    """The platform's own mailer: a backend path + options, or (Django 6.1+) a MAILERS alias."""

    backend: str | None = "django.core.mail.backends.smtp.EmailBackend"
    options: Mapping[str, Any] = field(default_factory=dict)
    mailer_alias: str | None = None


@dataclass(frozen=True)
class TenantMailSettings:
    default: PlatformDefault = field(default_factory=PlatformDefault)
    encryption_keys: tuple[str, ...] = ()
    allowed_backends: frozenset[str] = frozenset(BACKEND_ALIASES.values())
    required_options: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(REQUIRED_OPTIONS)
    )
    missing_config: MissingConfig = "default"
    unresolved: Unresolved = "platform"
    max_connections: int = 256
    idle_timeout: float = 60.0
    tenant_cache_seconds: float = 5.0
    metadata_key: str | None = "tenant"
    #: Tenant connections: default connect/read timeout, the cap tenants cannot raise, and
    #: whether tenant endpoints may resolve to private addresses (see tenantmail.endpoints).
    timeout: float = 10.0
    max_timeout: float = 30.0
    block_private_endpoints: bool = False
    suppression: SuppressionMode = "off"
    #: Parent credentials for sub-account mode, by ESP (``TENANTMAIL["SUBACCOUNTS"]``).
    subaccounts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Seconds between two verifications of one tenant (tenantmail.verification); 0 = no limit.
    verify_interval: float = 60.0
    #: django-tenants' own settings, read once here rather than on every send.
    public_schema_name: str = "public"
    tenant_db_alias: str = "default"


_KNOWN_KEYS = {
    "DEFAULT",
    "ENCRYPTION_KEYS",
    "ALLOWED_BACKENDS",
    "REQUIRED_OPTIONS",
    "MISSING_CONFIG",
    "MAX_CONNECTIONS",
    "IDLE_TIMEOUT",
    "TENANT_CACHE_SECONDS",
    "METADATA_KEY",
    "UNRESOLVED",
    "SUPPRESSION",
    # Parsed by tenantmail.webhooks.conf (the webhooks subpackage owns it).
    "WEBHOOKS",
    "TIMEOUT",
    "MAX_TIMEOUT",
    "BLOCK_PRIVATE_ENDPOINTS",
    # Parsed by tenantmail.queue.conf (the queue is a subpackage; the core only admits the key).
    "QUEUE",
    "SUBACCOUNTS",
    # Parsed by tenantmail.provisioning.conf (read only when provisioning, never on a send).
    "PROVISIONING",
    "VERIFY_INTERVAL",
}


def _error(key: str, message: str, *, section: str = "TENANTMAIL") -> TenantMailConfigurationError:
    # `section` names the dict holding `key`, e.g. 'TENANTMAIL["QUEUE"]' (tenantmail.queue.conf).
    return TenantMailConfigurationError(message, setting=f'{section}["{key}"]')


def expand_backend(name: str) -> str:
    """Map a short name such as ``"mailgun"`` to its dotted path; dotted paths pass through."""
    return BACKEND_ALIASES.get(name, name)


def _parse_default(raw: object) -> PlatformDefault:
    if isinstance(raw, str):
        # A bare string names a MAILERS alias (Django 6.1) ...
        return PlatformDefault(backend=None, mailer_alias=raw)
    if not isinstance(raw, Mapping):
        raise _error(
            "DEFAULT", 'must be a dict {"BACKEND": ..., "OPTIONS": {...}} or a MAILERS alias'
        )
    unknown = set(raw) - {"BACKEND", "OPTIONS"}
    if unknown:
        raise _error("DEFAULT", f"unknown keys {sorted(unknown)}; use BACKEND and OPTIONS")
    backend = raw.get("BACKEND", PlatformDefault.backend)
    options = raw.get("OPTIONS", {})
    if not isinstance(backend, str) or not backend:
        raise _error("DEFAULT", "BACKEND must be a dotted path or short name such as 'mailgun'")
    if not isinstance(options, Mapping):
        raise _error("DEFAULT", "OPTIONS must be a dict of the backend's keyword arguments")
    return PlatformDefault(backend=expand_backend(backend), options=dict(options))


def _number(
    raw: Mapping[str, Any],
    key: str,
    default: float,
    *,
    minimum: float,
    section: str = "TENANTMAIL",
) -> float:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise _error(key, f"must be a finite number >= {minimum}", section=section)
    return value


def _positive(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = _number(raw, key, default, minimum=0)
    if value <= 0:
        raise _error(key, "must be a number of seconds > 0")
    return float(value)


def load_settings() -> TenantMailSettings:
    """Parse and validate ``settings.TENANTMAIL`` (every key optional); raise the first problem."""
    problems: list[TenantMailConfigurationError] = []
    parsed = _load(problems)
    if problems:
        raise problems[0]
    return parsed


def load_settings_leniently() -> tuple[TenantMailSettings, list[TenantMailConfigurationError]]:
    """Every problem with ``settings.TENANTMAIL``, not just the first, and the settings with each
    bad key at its default (so the system checks can go on checking the rest)."""
    problems: list[TenantMailConfigurationError] = []
    return _load(problems), problems


def _load(problems: list[TenantMailConfigurationError]) -> TenantMailSettings:
    """Parse what can be parsed; each bad key is recorded in ``problems`` and left at its
    default, so the rest is still checked."""
    raw = getattr(settings, "TENANTMAIL", {})
    if not isinstance(raw, Mapping):
        problems.append(TenantMailConfigurationError("must be a dict", setting="TENANTMAIL"))
        raw = {}
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        problems.append(
            TenantMailConfigurationError(
                f"unknown keys {sorted(unknown)}; expected some of {sorted(_KNOWN_KEYS)}",
                setting="TENANTMAIL",
            )
        )
    defaults = TenantMailSettings()

    def parsed(parse: Callable[[], _T], fallback: _T) -> _T:
        try:
            return parse()
        except TenantMailConfigurationError as error:
            problems.append(error)
            return fallback

    timeouts = parsed(lambda: _parse_timeouts(raw), (defaults.timeout, defaults.max_timeout))
    return TenantMailSettings(
        default=parsed(lambda: _parse_default(raw["DEFAULT"]), defaults.default)
        if "DEFAULT" in raw
        else defaults.default,
        encryption_keys=parsed(lambda: _parse_keys(raw), defaults.encryption_keys),
        allowed_backends=parsed(lambda: _parse_allowed(raw), defaults.allowed_backends),
        required_options=parsed(lambda: _parse_required(raw), defaults.required_options),
        missing_config=parsed(lambda: _parse_missing(raw), defaults.missing_config),
        max_connections=int(
            parsed(
                lambda: _number(raw, "MAX_CONNECTIONS", defaults.max_connections, minimum=1),
                float(defaults.max_connections),
            )
        ),
        idle_timeout=parsed(
            lambda: _number(raw, "IDLE_TIMEOUT", defaults.idle_timeout, minimum=0),
            defaults.idle_timeout,
        ),
        tenant_cache_seconds=parsed(
            lambda: _number(raw, "TENANT_CACHE_SECONDS", defaults.tenant_cache_seconds, minimum=0),
            defaults.tenant_cache_seconds,
        ),
        metadata_key=parsed(lambda: _parse_metadata_key(raw), defaults.metadata_key),
        unresolved=parsed(lambda: _parse_unresolved(raw), defaults.unresolved),
        suppression=parsed(lambda: _parse_suppression(raw), defaults.suppression),
        timeout=timeouts[0],
        max_timeout=timeouts[1],
        block_private_endpoints=parsed(
            lambda: _parse_block_private(raw), defaults.block_private_endpoints
        ),
        subaccounts=parsed(
            lambda: parse_subaccounts(raw.get("SUBACCOUNTS", {})), dict(defaults.subaccounts)
        ),
        verify_interval=float(
            parsed(
                lambda: _number(raw, "VERIFY_INTERVAL", defaults.verify_interval, minimum=0),
                defaults.verify_interval,
            )
        ),
        public_schema_name=get_public_schema_name(),
        tenant_db_alias=get_tenant_database_alias(),
    )


def _parse_keys(raw: Mapping[str, Any]) -> tuple[str, ...]:
    keys = raw.get("ENCRYPTION_KEYS", ())
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise _error("ENCRYPTION_KEYS", "must be a list of Fernet keys, newest first")
    if not all(isinstance(k, str) and k for k in keys):
        raise _error("ENCRYPTION_KEYS", "every entry must be a non-empty string")
    return tuple(keys)


def _parse_allowed(raw: Mapping[str, Any]) -> frozenset[str]:
    allowed = raw.get("ALLOWED_BACKENDS", None)
    if allowed is None:
        return TenantMailSettings.allowed_backends
    if isinstance(allowed, str) or not isinstance(allowed, Sequence | set | frozenset):
        raise _error("ALLOWED_BACKENDS", "must be a list of backend dotted paths or short names")
    return frozenset(expand_backend(str(b)) for b in allowed)


def _parse_required(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    required = dict(REQUIRED_OPTIONS)
    extra_required = raw.get("REQUIRED_OPTIONS", {})
    if not isinstance(extra_required, Mapping):
        raise _error("REQUIRED_OPTIONS", "must be a dict {backend: [option, ...]}")
    for backend, names in extra_required.items():
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise _error("REQUIRED_OPTIONS", f"the entry for {backend!r} must be a list of names")
        required[expand_backend(backend)] = tuple(names)
    return required


def _parse_missing(raw: Mapping[str, Any]) -> MissingConfig:
    missing = raw.get("MISSING_CONFIG", TenantMailSettings.missing_config)
    if missing not in ("default", "raise"):
        raise _error("MISSING_CONFIG", 'must be "default" or "raise"')
    return cast(MissingConfig, missing)


def _parse_unresolved(raw: Mapping[str, Any]) -> Unresolved:
    unresolved = raw.get("UNRESOLVED", TenantMailSettings.unresolved)
    if unresolved not in ("platform", "raise"):
        raise _error(
            "UNRESOLVED", 'must be "platform" (send as the platform, with a warning) or "raise"'
        )
    return cast(Unresolved, unresolved)


def _parse_suppression(raw: Mapping[str, Any]) -> SuppressionMode:
    mode = raw.get("SUPPRESSION", TenantMailSettings.suppression)
    if mode not in ("off", "drop", "raise"):
        raise _error("SUPPRESSION", 'must be "off", "drop" or "raise"')
    return cast(SuppressionMode, mode)


def _parse_metadata_key(raw: Mapping[str, Any]) -> str | None:
    metadata_key = raw.get("METADATA_KEY", TenantMailSettings.metadata_key)
    if metadata_key is not None and (not isinstance(metadata_key, str) or not metadata_key):
        raise _error("METADATA_KEY", "must be a non-empty string, or None to opt out")
    return metadata_key


def _parse_timeouts(raw: Mapping[str, Any]) -> tuple[float, float]:
    timeout = _positive(raw, "TIMEOUT", TenantMailSettings.timeout)
    max_timeout = _positive(raw, "MAX_TIMEOUT", TenantMailSettings.max_timeout)
    if timeout > max_timeout:
        raise _error("TIMEOUT", f'must not exceed TENANTMAIL["MAX_TIMEOUT"] ({max_timeout:g})')
    return timeout, max_timeout


def _parse_block_private(raw: Mapping[str, Any]) -> bool:
    block_private = raw.get("BLOCK_PRIVATE_ENDPOINTS", TenantMailSettings.block_private_endpoints)
    if not isinstance(block_private, bool):
        raise _error("BLOCK_PRIVATE_ENDPOINTS", "must be True or False")
    return block_private


@cache
def get_settings() -> TenantMailSettings:
    """The parsed settings, cached until a relevant ``setting_changed`` signal."""
    return load_settings()


#: Settings whose change must invalidate everything derived from them.
WATCHED_SETTINGS = frozenset(
    {
        "TENANTMAIL",
        "SECRET_KEY",
        "SECRET_KEY_FALLBACKS",
        "MAILERS",
        "PUBLIC_SCHEMA_NAME",
        "TENANT_DB_ALIAS",
    }
)


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in WATCHED_SETTINGS:
        get_settings.cache_clear()
