"""System checks. Each ID is stable and has a test.

- ``tenantmail.E001`` the TENANTMAIL setting is malformed
- ``tenantmail.E002`` an ENCRYPTION_KEYS entry is not a Fernet key
- ``tenantmail.E003`` the platform DEFAULT is unusable (loops back into TenantBackend, or names
  a missing MAILERS alias)
- ``tenantmail.W001`` the tenant model does not use TenantMailMixin (all mail uses the platform)
- ``tenantmail.W002`` an ALLOWED_BACKENDS entry cannot be imported
- ``tenantmail.W003`` an AdminEmailHandler subclass that sends its own kind of mail routes
  through TenantBackend (Django's own server mail is always platform mail; other mail is not)
- ``tenantmail.W010`` an explicitly allowed sub-account backend has no parent credential in
  ``TENANTMAIL["SUBACCOUNTS"]`` (tenants choosing it cannot send)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.utils.log import DEFAULT_LOGGING, AdminEmailHandler
from django.utils.module_loading import import_string

from .conf import TenantMailSettings, load_settings_leniently
from .exceptions import TenantMailConfigurationError

TENANT_BACKEND = "tenantmail.backends.TenantBackend"


@checks.register("tenantmail")
def check_settings(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    # Every problem in one run: each malformed key is reported (E001), and the other checks run
    # on the rest, with the broken keys at their defaults.
    parsed, problems = load_settings_leniently()
    errors: list[checks.CheckMessage] = [
        checks.Error(str(error), id="tenantmail.E001") for error in problems
    ]
    errors += _check_keys(parsed)
    errors += _check_default(parsed)
    errors += _check_tenant_model()
    errors += _check_allowed_backends(parsed)
    errors += _check_admin_mail()
    errors += _check_subaccounts(parsed)
    return errors


def _check_keys(parsed: TenantMailSettings) -> list[checks.CheckMessage]:
    from .crypto import fernets_from

    errors: list[checks.CheckMessage] = []
    for index, key in enumerate(parsed.encryption_keys):
        try:  # one key at a time: every malformed entry is named, not only the first
            fernets_from([key], start=index)
        except TenantMailConfigurationError as error:
            errors.append(checks.Error(str(error), id="tenantmail.E002"))
    return errors


def _check_default(parsed: TenantMailSettings) -> list[checks.CheckMessage]:
    from .config import platform_default

    try:
        platform_default(parsed)
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


def _check_allowed_backends(parsed: TenantMailSettings) -> list[checks.CheckMessage]:
    from .factory import backend_class

    raw = getattr(settings, "TENANTMAIL", {})
    if not isinstance(raw, Mapping) or not raw.get("ALLOWED_BACKENDS"):
        return []
    problems: list[checks.CheckMessage] = []
    for path in sorted(parsed.allowed_backends):
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


def _is_tenant_backend(path: object) -> bool:
    if path == TENANT_BACKEND:
        return True
    if not isinstance(path, str) or not path:
        return False
    from .backends import TenantBackend

    try:
        backend = import_string(path)
    except ImportError:
        return False  # Django reports an unimportable backend when it is used
    return isinstance(backend, type) and issubclass(backend, TenantBackend)


def _check_subaccounts(s: TenantMailSettings) -> list[checks.CheckMessage]:
    from .subaccounts import SETTING, subaccount_kind

    raw = getattr(settings, "TENANTMAIL", {})
    if not isinstance(raw, Mapping) or not raw.get("ALLOWED_BACKENDS"):
        return []  # the default allow-list offers them; only an explicit choice is a mistake
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
    if _is_tenant_backend(route):
        return True
    mailers = getattr(settings, "MAILERS", None)
    if isinstance(mailers, Mapping):
        entry = mailers.get(route or "default")
        return isinstance(entry, Mapping) and _is_tenant_backend(entry.get("BACKEND"))
    return route is None and _is_tenant_backend(getattr(settings, "EMAIL_BACKEND", None))


def _sends_its_own_mail(handler_class: type[AdminEmailHandler]) -> bool:
    """Does this handler class build its messages itself instead of through mail_admins()?

    TenantBackend recognises Django's own server mail (from SERVER_EMAIL to ADMINS/MANAGERS,
    see :mod:`tenantmail.platform_mail`) and sends it as platform mail; a subclass that
    overrides how mail is sent may send something else, which would go out as tenant mail.
    """
    return (
        handler_class.send_mail is not AdminEmailHandler.send_mail
        or handler_class.emit is not AdminEmailHandler.emit
    )


AdminRoute = tuple[str, type[AdminEmailHandler], str | None]


def _admin_handlers() -> set[AdminRoute]:
    """(name, class, route) of every AdminEmailHandler: configured in LOGGING, and live ones.

    Live handlers matter: Django applies its DEFAULT_LOGGING (an AdminEmailHandler on the
    ``django`` logger, ``django.security.*`` included) even when LOGGING does not mention it.
    """
    configured: dict[str, AdminRoute] = {}
    logging_setting = (getattr(settings, "LOGGING", None) or {}).get("handlers", {})
    for name, config in [*DEFAULT_LOGGING["handlers"].items(), *logging_setting.items()]:
        try:
            handler_class = import_string(config.get("class", ""))
        except ImportError:
            handler_class = None
        if isinstance(handler_class, type) and issubclass(handler_class, AdminEmailHandler):
            route = config.get("using") or config.get("email_backend")
            configured[name] = (name, handler_class, route)
        else:
            configured.pop(name, None)  # LOGGING replaced the default handler of that name
    found = set(configured.values())
    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(x for x in known if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, AdminEmailHandler):
                route = getattr(handler, "using", None) or handler.email_backend
                found.add((handler.name or logger.name, type(handler), route))
    return found


def _check_admin_mail() -> list[checks.CheckMessage]:
    problems: list[checks.CheckMessage] = []
    for name, handler_class, route in sorted(_admin_handlers(), key=repr):
        if _sends_its_own_mail(handler_class) and _routes_to_tenant_backend(route):
            problems.append(
                checks.Warning(
                    f"LOGGING handler {name!r} ({handler_class.__module__}."
                    f"{handler_class.__qualname__}) overrides how AdminEmailHandler sends and "
                    "routes through TenantBackend: only Django's own server mail (from "
                    "SERVER_EMAIL to ADMINS/MANAGERS) is sent as platform mail, so anything "
                    "else it sends during a tenant's request goes through that tenant's account.",
                    hint="Give it a platform mailer: 'using': 'admin' (Django 6.1 MAILERS) or "
                    "'email_backend': 'django.core.mail.backends.smtp.EmailBackend'.",
                    id="tenantmail.W003",
                )
            )
    return problems
