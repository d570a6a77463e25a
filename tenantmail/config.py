"""Resolving *what* to send with: overrides > the tenant's own config > the platform default.

The result, :class:`MailConfig`, is immutable and carries a fingerprint of (backend, options):
the pool keys connections by it, so new credentials mean a new connection in every process with
no invalidation protocol at all.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.views.decorators.debug import sensitive_variables

from . import fastpath
from .conf import (
    WATCHED_SETTINGS,
    PlatformDefault,
    TenantMailSettings,
    expand_backend,
    get_settings,
)
from .defaults import freeze
from .exceptions import TenantMailConfigurationError
from .fields import UndecryptableOptions
from .isolation import ISOLATING_DEFAULTS as ISOLATING_DEFAULTS  # re-exported: moved there
from .isolation import isolate
from .masking import SecretDict, masked
from .models import TenantMailMixin, TenantMailSource
from .subaccounts import SETTING as SUBACCOUNTS_SETTING
from .subaccounts import subaccount_kind, subaccount_options
from .tenancy import ActiveTenant
from .validation import check_defaults, check_esp_extra, check_options, refuse_nulls

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
TENANT_BACKEND = "tenantmail.backends.TenantBackend"

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
    #: Sub-account mode (tenantmail.esp): where the parent credential comes from.
    parent_setting: str | None = None

    @cached_property  # configs are memoized, so this is computed once per config
    def pool_key(self) -> tuple[str | None, str]:
        # Platform-account configs are shared by every tenant that falls back to them.
        return (self.tenant if self.own_account else None, self.fingerprint)

    @cached_property  # read on every send; the settings it reads clear the memo when changed
    def trace(self) -> tuple[str, str] | None:
        """``(metadata key, schema)`` stamped on every message of this tenant, if any."""
        key = get_settings().metadata_key
        return (key, self.tenant) if key and self.tenant is not None else None

    @cached_property  # read on every send; a change of TENANTMAIL clears the memo
    def suppression(self) -> str:
        """The ``SUPPRESSION`` mode sends under this config run with."""
        return get_settings().suppression

    @property
    def setting_name(self) -> str:
        """Where a person fixes this config -- used in every error message."""
        if self.parent_setting is not None:
            return self.parent_setting  # the options are the parent's, not the tenant's
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
    """Pool-key fingerprint of (backend, options, alias): new credentials, new connections."""
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
        if options.key_error is not None:  # the key ring itself is broken, not this row
            raise TenantMailConfigurationError(
                f"cannot be decrypted: {options.key_error}", tenant=schema, setting="mail_options"
            ) from None  # the cause's frames hold the whole key ring; its text is quoted above
        raise TenantMailConfigurationError(
            'no key in TENANTMAIL["ENCRYPTION_KEYS"] decrypts it; add back the key it was '
            "encrypted with, or enter the credentials again",
            tenant=schema,
            setting="mail_options",
        )
    kind = subaccount_kind(backend)
    if kind is not None:  # sub-account mode: the parent credential, never the tenant's options
        return backend, subaccount_options(
            kind, backend, options, source.subaccount, s.subaccounts, schema
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
    # After the required check, so a null credential is reported as the missing credential.
    refuse_nulls(options, schema)
    # The platform's default tenant timeout (TENANTMAIL["TIMEOUT"]) for a tenant that sets none.
    return backend, isolate(backend, options, schema, timeout=s.timeout)


class _Memo:
    """One resolved config and (copies of) the inputs it was computed from."""

    __slots__ = ("config", "options_type", "overrides", "source")

    def __init__(
        self,
        source: TenantMailSource | None,
        options_type: type | None,
        overrides: Mapping[str, Any],
        config: MailConfig,
    ) -> None:
        self.source = source
        self.options_type = options_type
        self.overrides = overrides
        self.config = config

    def matches(self, source: TenantMailSource | None, overrides: Mapping[str, Any]) -> bool:
        mine = self.source
        if source is None or mine is None:
            return source is mine and self.overrides == overrides
        return self.matches_parts(
            source.backend, source.options, source.defaults, source.subaccount, overrides
        )

    def matches_parts(
        self,
        backend: str | None,
        options: Any,
        defaults: Any,
        subaccount: str,
        overrides: Mapping[str, Any],
    ) -> bool:
        """:meth:`matches` for a source given as its parts (not built: see ``_fast_get``)."""
        mine = self.source
        # The options' type first: undecryptable options compare equal to {} but must never be
        # mistaken for them.
        return (
            mine is not None
            and self.options_type is type(options)
            and mine.backend == backend
            and mine.subaccount == subaccount
            and mine.options == options
            and mine.defaults == defaults
            and self.overrides == overrides
        )


class _ResolvedCache:
    """The last few validated configs per tenant, each with a copy of what it came from.

    Resolving is pure: the same tenant source, overrides and settings always give the same
    MailConfig. Validation walks every option value, so without this it would be the bulk of
    TenantBackend's per-send cost. A hit compares the current inputs with the remembered copies
    (dict equality, done in C: no encoding or hashing per send), so a credential changed in
    place, or loaded into a fresh instance by the next request, is a miss and is validated
    again. Equality is Python's: ``1 == 1.0 == True``, so such a change may reuse the config
    validated for the equal value -- never an unvalidated one, since a config is built from the
    copies it is remembered with. Errors are never cached. Cleared when settings change.
    """

    PER_TENANT = 4
    MAX_TENANTS = 16_384

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str | None, tuple[_Memo, ...]] = {}

    def get(
        self, schema: str | None, source: TenantMailSource | None, overrides: Mapping[str, Any]
    ) -> MailConfig | None:
        # A plain dict read is atomic; no lock on the hot path.
        for memo in self._entries.get(schema, ()):
            try:
                if memo.matches(source, overrides):
                    return memo.config
            except Exception:  # an input whose __eq__ raises: resolve it, uncached
                return None
        return None

    def get_parts(
        self,
        schema: str,
        backend: str | None,
        options: Any,
        defaults: Any,
        subaccount: str,
    ) -> _Memo | None:
        """:meth:`get` without overrides, for a source given as its parts: the memo that hit."""
        for memo in self._entries.get(schema, ()):
            try:
                if memo.matches_parts(backend, options, defaults, subaccount, _NO_OVERRIDES):
                    return memo
            except Exception:  # an input whose __eq__ raises: resolve it, uncached
                return None
        return None

    def put(self, schema: str | None, memo: _Memo) -> None:
        with self._lock:
            kept = self._entries.pop(schema, ())
            self._entries[schema] = (memo, *kept[: self.PER_TENANT - 1])
            while len(self._entries) > self.MAX_TENANTS:  # the least recently resolved goes
                del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            fastpath.memo_cleared()


_NO_OVERRIDES: Mapping[str, Any] = MappingProxyType({})
_resolved = _ResolvedCache()
# A lock another thread held at fork() stays held in the child forever: give the child a new one.
os.register_at_fork(after_in_child=lambda: setattr(_resolved, "_lock", threading.Lock()))


def resolve(active: ActiveTenant | None, overrides: Mapping[str, Any] | None = None) -> MailConfig:
    """The :class:`MailConfig` for ``active`` (``None`` = platform mail), with ``overrides``."""
    if active is not None and not overrides:
        # A memo hit raises nothing and its frame holds only masked objects (the config, the
        # tenant), so it runs outside sensitive_variables' wrapper (~0.25 us a call).
        config = _fast_get(active)
        if config is not None:
            return config
    return _resolve_memoized(active, overrides)


@sensitive_variables()
def _resolve_memoized(
    active: ActiveTenant | None, overrides: Mapping[str, Any] | None
) -> MailConfig:
    source = _source(active)
    schema = active.schema_name if active is not None else None
    overrides = overrides or {}
    config = _resolved.get(schema, source, overrides)
    if config is not None:
        return config
    try:
        # Validated and sent from copies: the config never shares a dict with the tenant
        # instance, so an unsaved in-place edit cannot reach a later send unvalidated.
        copied = source and TenantMailSource(
            backend=source.backend,
            options=copy.deepcopy(source.options),
            defaults=copy.deepcopy(source.defaults),
            subaccount=source.subaccount,
        )
        copied_overrides = copy.deepcopy(dict(overrides))
    except Exception:  # not copyable (a code-supplied object): resolve it as it is, uncached
        return _resolve(active, source, overrides)
    config = _resolve(active, copied, copied_overrides)
    options_type = type(source.options) if source is not None else None
    _resolved.put(schema, _Memo(copied, options_type, copied_overrides, config))
    return config


def _resolve(
    active: ActiveTenant | None, source: TenantMailSource | None, overrides: Mapping[str, Any]
) -> MailConfig:
    s = get_settings()
    schema = active.schema_name if active is not None else None
    defaults: Mapping[str, Any] = {}
    own_account = False
    alias: str | None = None
    if source is not None and active is not None and schema is not None:
        # Frozen copy: the instance's own dict, edited in place and unsaved, must not reach
        # later sends through this memoized config without being validated again.
        defaults = freeze(check_defaults(source.defaults, schema))
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
    kind = subaccount_kind(backend) if own_account else None
    if schema is not None:
        if kind is not None and defaults.get("esp_extra"):
            raise TenantMailConfigurationError(
                "'esp_extra' is not available in sub-account mode: with the platform's parent "
                "credential it could name another tenant's sub-account, SES tenant or domain; "
                "remove it",
                tenant=schema,
                setting="mail_defaults",
            )
        check_esp_extra(defaults, own_account=own_account, tenant=schema)
    # None means "not given": Django's send_mail() passes username=None/password=None.
    merged = SecretDict(options)
    merged.update((k, v) for k, v in overrides.items() if v is not None)
    return MailConfig(
        backend=backend,
        options=merged,
        defaults=defaults,
        tenant=schema,
        own_account=own_account,
        mailer_alias=alias,
        fingerprint=fingerprint(backend, merged, alias),
        parent_setting=None if kind is None else f'{SUBACCOUNTS_SETTING}["{kind.esp}"]',
    )


def _fast_get(active: ActiveTenant) -> MailConfig | None:
    """The memoized config for a tenant model that reads its mail settings the default way.

    The warm path: :meth:`TenantMailMixin.get_mail_config` only reads four fields, so they are
    compared with the memo's copies straight from the instance, without building the
    :class:`TenantMailSource` (about a third of a warm resolution). Exactly what
    :func:`_source` would return is compared, so this hits only where the memo would. A model
    that overrides ``get_mail_config`` (or a deferred field) takes the general path.
    """
    instance = active.instance
    if getattr(type(instance), "get_mail_config", None) is not _DEFAULT_GET_MAIL_CONFIG:
        return None
    fields = vars(instance)
    try:
        backend = fields["mail_backend"]
        options = fields["mail_options"]
        defaults = fields["mail_defaults"]
        subaccount = fields["mail_subaccount"]
    except KeyError:  # deferred: the general path loads it
        return None
    seen = fastpath.generations()  # before the lookup: an invalidation after it must miss
    memo = _resolved.get_parts(
        active.schema_name,
        backend or None,
        options if options is not None else {},
        defaults if defaults is not None else {},
        subaccount or "",
    )
    if memo is None:
        return None
    fastpath.remember(instance, active.schema_name, memo, seen)  # this thread's next send
    return memo.config


_DEFAULT_GET_MAIL_CONFIG = TenantMailMixin.get_mail_config


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


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in WATCHED_SETTINGS:
        _resolved.clear()
