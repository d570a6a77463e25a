"""System checks. Each ID is stable and has a test.

- ``tenantmail.E001`` the TENANTMAIL setting is malformed
- ``tenantmail.E002`` an ENCRYPTION_KEYS entry is not a Fernet key
- ``tenantmail.E003`` the platform DEFAULT is unusable (loops back into TenantBackend, or names
  a missing MAILERS alias)
- ``tenantmail.W001`` the tenant model does not use TenantMailMixin (all mail uses the platform)
- ``tenantmail.W002`` an ALLOWED_BACKENDS entry cannot be imported
- ``tenantmail.W003`` AdminEmailHandler would send error mail through a tenant's account
- ``tenantmail.W010`` an explicitly allowed sub-account backend has no parent credential in
  ``TENANTMAIL["SUBACCOUNTS"]`` (tenants choosing it cannot send)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks

from .conf import get_settings, load_settings
from .exceptions import TenantMailConfigurationError

TENANT_BACKEND = "tenantmail.backends.TenantBackend"


@checks.register("tenantmail")
def check_settings(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        load_settings()
    except TenantMailConfigurationError as error:
        return [checks.Error(str(error), id="tenantmail.E001")]
    errors: list[checks.CheckMessage] = []
    errors += _check_keys()
    errors += _check_default()
    errors += _check_tenant_model()
    errors += _check_allowed_backends()
    errors += _check_admin_mail()
    errors += _check_subaccounts()
    return errors


def _check_keys() -> list[checks.CheckMessage]:
    from .crypto import key_ring

    try:
        key_ring()
    except TenantMailConfigurationError as error:
        return [checks.Error(str(error), id="tenantmail.E002")]
    return []


def _check_default() -> list[checks.CheckMessage]:
    from .config import platform_default

    try:
        platform_default(get_settings())
    except TenantMailConfigurationError as error:
        return [checks.Error(str(error), id="tenantmail.E003")]
    return []


def _check_tenant_model() -> list[checks.CheckMessage]:
    from .models import TenantMailMixin

    label = getattr(settings, "TENANT_MODEL", None)
    try:
        model = apps.get_model(label) if label else None
    except (LookupError, ValueError):
        model = None  # django-tenants reports a bad TENANT_MODEL itself
    if model is not None and not issubclass(model, TenantMailMixin):
        return [
            checks.Warning(
                f"{label} does not inherit TenantMailMixin, so every tenant sends through the "
                "platform account.",
                hint="class Client(TenantMixin, TenantMailMixin): ... then makemigrations.",
                id="tenantmail.W001",
            )
        ]
    return []


def _check_allowed_backends() -> list[checks.CheckMessage]:
    from .factory import backend_class

    explicit = getattr(settings, "TENANTMAIL", {}).get("ALLOWED_BACKENDS")
    if not explicit:
        return []
    problems: list[checks.CheckMessage] = []
    for path in sorted(get_settings().allowed_backends):
        try:
            backend_class(path)
        except (ImportError, TypeError) as error:
            problems.append(
                checks.Warning(
                    f'TENANTMAIL["ALLOWED_BACKENDS"]: {error}',
                    hint="Install the ESP's extra (e.g. 'tenantmail[mailgun]') or remove it.",
                    id="tenantmail.W002",
                )
            )
    return problems


def _check_subaccounts() -> list[checks.CheckMessage]:
    from .esp.subaccounts import SETTING, subaccount_kind

    raw = getattr(settings, "TENANTMAIL", {})
    if not isinstance(raw, Mapping) or not raw.get("ALLOWED_BACKENDS"):
        return []  # the default allow-list offers them; only an explicit choice is a mistake
    s = get_settings()
    problems: list[checks.CheckMessage] = []
    for path in sorted(s.allowed_backends):
        kind = subaccount_kind(path)
        if kind is not None and kind.esp not in s.subaccounts:
            problems.append(
                checks.Warning(
                    f'TENANTMAIL["ALLOWED_BACKENDS"] allows {path}, but {SETTING} has no '
                    f"{kind.esp!r} entry: tenants in that sub-account mode cannot send.",
                    hint=f'Add the parent credential: {SETTING} = {{"{kind.esp}": {{...}}}}.',
                    id="tenantmail.W010",
                )
            )
    return problems


def _routes_to_tenant_backend(route: str | None) -> bool:
    """Does an AdminEmailHandler with this ``using``/``email_backend`` end up in TenantBackend?"""
    if route == TENANT_BACKEND:
        return True
    mailers = getattr(settings, "MAILERS", None)
    if isinstance(mailers, Mapping):
        entry = mailers.get(route or "default")
        return isinstance(entry, Mapping) and entry.get("BACKEND") == TENANT_BACKEND
    return route is None and getattr(settings, "EMAIL_BACKEND", None) == TENANT_BACKEND


def _check_admin_mail() -> list[checks.CheckMessage]:
    handlers = (getattr(settings, "LOGGING", None) or {}).get("handlers", {})
    problems: list[checks.CheckMessage] = []
    for name, handler in handlers.items():
        if handler.get("class") != "django.utils.log.AdminEmailHandler":
            continue
        route = handler.get("using") or handler.get("email_backend")
        if _routes_to_tenant_backend(route):
            problems.append(
                checks.Warning(
                    f"LOGGING handler {name!r} sends error mail through TenantBackend, so an "
                    "error during a tenant's request is mailed through that tenant's account.",
                    hint="Give it a platform mailer: 'using': 'admin' (Django 6.1 MAILERS) or "
                    "'email_backend': 'django.core.mail.backends.smtp.EmailBackend'.",
                    id="tenantmail.W003",
                )
            )
    return problems
