"""Resolving *what* to send with: overrides > the tenant's own config > the platform default.

The result, :class:`MailConfig`, is immutable and carries a fingerprint of (backend, options):
the pool keys connections by it, so new credentials mean a new connection in every process with
no invalidation protocol at all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from .conf import PlatformDefault, TenantMailSettings, expand_backend, get_settings
from .exceptions import TenantMailConfigurationError
from .fields import UndecryptableOptions
from .masking import SecretDict, masked
from .models import TenantMailSource
from .tenancy import ActiveTenant
from .validation import check_defaults, check_options

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
TENANT_BACKEND = "tenantmail.backends.TenantBackend"

#: Options filled in for tenant configs so a backend cannot fall back to the platform's settings.
#: (Before Django 6.1 the SMTP backend reads EMAIL_HOST_USER/PASSWORD when these are None.)
ISOLATING_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    SMTP_BACKEND: {"username": "", "password": ""},
}

# Fingerprints only need to be stable inside one process; keying the hash with a per-process
# secret means a fingerprint in a log or stats dump cannot be used to brute-force a short password.
_FINGERPRINT_KEY = secrets.token_bytes(32)


@dataclass(frozen=True, repr=False)
class MailConfig:
    """Everything needed to send one batch: resolved, validated, immutable."""

    backend: str
    options: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Schema whose mail this is (``None`` for platform mail).
    tenant: str | None = None
    #: True when the tenant's own account is used; False for the platform's account.
    own_account: bool = False
    #: The MAILERS alias this config came from, if any (Django 6.1).
    mailer_alias: str | None = None
    fingerprint: str = ""

    @property
    def pool_key(self) -> tuple[str | None, str]:
        # Platform-account configs are shared by every tenant that falls back to them.
        return (self.tenant if self.own_account else None, self.fingerprint)

    @property
    def setting_name(self) -> str:
        """Where a person fixes this config -- used in every error message."""
        if self.own_account:
            return "mail_options"
        if self.mailer_alias is not None:
            return f"MAILERS[{self.mailer_alias!r}]"
        return 'TENANTMAIL["DEFAULT"]'

    def __repr__(self) -> str:
        return (
            f"MailConfig(tenant={self.tenant!r}, backend={self.backend!r}, "
            f"own_account={self.own_account}, options={masked(self.options)!r}, "
            f"defaults={self.defaults!r})"
        )


def fingerprint(backend: str, options: Mapping[str, Any], alias: str | None) -> str:
    text = json.dumps([backend, alias, options], sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode("utf-8"), key=_FINGERPRINT_KEY, digest_size=16).hexdigest()


def platform_default(s: TenantMailSettings) -> PlatformDefault:
    default = s.default
    if default.mailer_alias is None:
        backend = default.backend
        if backend == TENANT_BACKEND:
            raise TenantMailConfigurationError(
                "BACKEND is TenantBackend itself; name the platform's real backend",
                setting='TENANTMAIL["DEFAULT"]',
            )
        return default
    alias = default.mailer_alias
    mailers = getattr(settings, "MAILERS", None)
    if not isinstance(mailers, Mapping) or alias not in mailers:
        raise TenantMailConfigurationError(
            f"names the mailer {alias!r}, which is not in settings.MAILERS (MAILERS needs "
            'Django 6.1; on older versions use {"BACKEND": ..., "OPTIONS": {...}})',
            setting='TENANTMAIL["DEFAULT"]',
        )
    entry = mailers[alias]
    backend = entry.get("BACKEND", SMTP_BACKEND)
    if backend == TENANT_BACKEND:
        raise TenantMailConfigurationError(
            f"names the mailer {alias!r}, which is a TenantBackend: the platform default must "
            "be a real backend (e.g. a 'platform' mailer), or every send would loop",
            setting='TENANTMAIL["DEFAULT"]',
        )
    return PlatformDefault(backend=backend, options=entry.get("OPTIONS", {}), mailer_alias=alias)


@sensitive_variables()
def _tenant_account(
    source: TenantMailSource, schema: str, s: TenantMailSettings
) -> tuple[str, dict[str, Any]]:
    """Validate a tenant's own (backend, options)."""
    backend = expand_backend(str(source.backend))
    options = source.options
    if backend not in s.allowed_backends:
        raise TenantMailConfigurationError(
            f"backend {source.backend!r} is not allowed; choose one of TENANTMAIL"
            '["ALLOWED_BACKENDS"] or ask the platform operator to allow it',
            tenant=schema,
            setting="mail_backend",
        )
    if isinstance(options, UndecryptableOptions):
        raise TenantMailConfigurationError(
            'no key in TENANTMAIL["ENCRYPTION_KEYS"] decrypts it; add back the key it was '
            "encrypted with, or enter the credentials again",
            tenant=schema,
            setting="mail_options",
        )
    if not isinstance(options, Mapping):
        raise TenantMailConfigurationError(
            f"must be a JSON object of {backend}'s options, got {type(options).__name__}",
            tenant=schema,
            setting="mail_options",
        )
    check_options(options, schema)
    missing = [
        name for name in s.required_options.get(backend, ()) if options.get(name) in (None, "")
    ]
    if missing:
        raise TenantMailConfigurationError(
            f"{backend} needs {', '.join(repr(n) for n in missing)} here; without it the "
            "platform's own credentials would be used for this tenant",
            tenant=schema,
            setting="mail_options",
        )
    return backend, {**ISOLATING_DEFAULTS.get(backend, {}), **options}


@sensitive_variables()
def resolve(active: ActiveTenant | None, overrides: Mapping[str, Any] | None = None) -> MailConfig:
    """The :class:`MailConfig` for ``active`` (``None`` = platform mail), with ``overrides``."""
    s = get_settings()
    schema = active.schema_name if active is not None else None
    defaults: Mapping[str, Any] = {}
    own_account = False
    alias: str | None = None
    source = _source(active)
    if source is not None and active is not None and schema is not None:
        defaults = check_defaults(source.defaults, schema)
        if source.backend:
            backend, options = _tenant_account(source, schema, s)
            own_account = True
        elif source.options:
            raise TenantMailConfigurationError(
                "is set but mail_backend is blank; choose a backend, or clear the options to "
                "use the platform default",
                tenant=schema,
                setting="mail_options",
            )
    if not own_account:
        if active is not None and s.missing_config == "raise":
            raise TenantMailConfigurationError(
                'has no mail backend configured and TENANTMAIL["MISSING_CONFIG"] is "raise"; '
                "set mail_backend and mail_options on the tenant",
                tenant=schema,
                setting="mail_backend",
            )
        platform = platform_default(s)
        backend, options, alias = (
            str(platform.backend),
            dict(platform.options),
            platform.mailer_alias,
        )
    # None means "not given": Django's send_mail() passes username=None/password=None.
    merged = SecretDict(options)
    merged.update((k, v) for k, v in (overrides or {}).items() if v is not None)
    return MailConfig(
        backend=backend,
        options=merged,
        defaults=defaults,
        tenant=schema,
        own_account=own_account,
        mailer_alias=alias,
        fingerprint=fingerprint(backend, merged, alias),
    )


def _source(active: ActiveTenant | None) -> TenantMailSource | None:
    if active is None:
        return None
    get_mail_config = getattr(active.instance, "get_mail_config", None)
    if get_mail_config is None:
        # A tenant model without TenantMailMixin: every tenant uses the platform account.
        return TenantMailSource(backend=None)
    source = get_mail_config()
    if not isinstance(source, TenantMailSource):
        raise TenantMailConfigurationError(
            f"get_mail_config() must return a TenantMailSource, got {type(source).__name__}",
            tenant=active.schema_name,
            setting="get_mail_config",
        )
    return source
