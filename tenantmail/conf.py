"""Typed, lazy access to ``settings.TENANTMAIL``.

Settings are read on first use, never at import time, and re-read after Django's
``setting_changed`` signal (``override_settings`` in tests), so the library can be imported
before settings are configured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_tenants.utils import get_public_schema_name, get_tenant_database_alias

from .esp.subaccounts import SUBACCOUNT_BACKENDS, parse_subaccounts
from .exceptions import TenantMailConfigurationError

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
    max_connections: int = 256
    idle_timeout: float = 60.0
    tenant_cache_seconds: float = 5.0
    metadata_key: str | None = "tenant"
    #: Parent credentials for sub-account mode, by ESP (``TENANTMAIL["SUBACCOUNTS"]``).
    subaccounts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
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
    "SUBACCOUNTS",
}


def _error(key: str, message: str) -> TenantMailConfigurationError:
    return TenantMailConfigurationError(message, setting=f'TENANTMAIL["{key}"]')


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


def _number(raw: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise _error(key, f"must be a finite number >= {minimum}")
    return value


def load_settings() -> TenantMailSettings:
    """Parse and validate ``settings.TENANTMAIL`` (every key optional)."""
    raw = getattr(settings, "TENANTMAIL", {})
    if not isinstance(raw, Mapping):
        raise TenantMailConfigurationError("must be a dict", setting="TENANTMAIL")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise TenantMailConfigurationError(
            f"unknown keys {sorted(unknown)}; expected some of {sorted(_KNOWN_KEYS)}",
            setting="TENANTMAIL",
        )
    defaults = TenantMailSettings()

    keys = raw.get("ENCRYPTION_KEYS", ())
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise _error("ENCRYPTION_KEYS", "must be a list of Fernet keys, newest first")
    if not all(isinstance(k, str) and k for k in keys):
        raise _error("ENCRYPTION_KEYS", "every entry must be a non-empty string")

    allowed = raw.get("ALLOWED_BACKENDS", None)
    if allowed is None:
        allowed_set = defaults.allowed_backends
    elif isinstance(allowed, str) or not isinstance(allowed, Sequence | set | frozenset):
        raise _error("ALLOWED_BACKENDS", "must be a list of backend dotted paths or short names")
    else:
        allowed_set = frozenset(expand_backend(str(b)) for b in allowed)

    required = dict(defaults.required_options)
    extra_required = raw.get("REQUIRED_OPTIONS", {})
    if not isinstance(extra_required, Mapping):
        raise _error("REQUIRED_OPTIONS", "must be a dict {backend: [option, ...]}")
    for backend, names in extra_required.items():
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise _error("REQUIRED_OPTIONS", f"the entry for {backend!r} must be a list of names")
        required[expand_backend(backend)] = tuple(names)

    missing = raw.get("MISSING_CONFIG", defaults.missing_config)
    if missing not in ("default", "raise"):
        raise _error("MISSING_CONFIG", 'must be "default" or "raise"')

    metadata_key = raw.get("METADATA_KEY", defaults.metadata_key)
    if metadata_key is not None and (not isinstance(metadata_key, str) or not metadata_key):
        raise _error("METADATA_KEY", "must be a non-empty string, or None to opt out")

    return TenantMailSettings(
        default=_parse_default(raw["DEFAULT"]) if "DEFAULT" in raw else defaults.default,
        encryption_keys=tuple(keys),
        allowed_backends=allowed_set,
        required_options=required,
        missing_config=missing,
        max_connections=int(_number(raw, "MAX_CONNECTIONS", defaults.max_connections, minimum=1)),
        idle_timeout=_number(raw, "IDLE_TIMEOUT", defaults.idle_timeout, minimum=0),
        tenant_cache_seconds=_number(
            raw, "TENANT_CACHE_SECONDS", defaults.tenant_cache_seconds, minimum=0
        ),
        metadata_key=metadata_key,
        subaccounts=parse_subaccounts(raw.get("SUBACCOUNTS", {})),
        public_schema_name=get_public_schema_name(),
        tenant_db_alias=get_tenant_database_alias(),
    )


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
