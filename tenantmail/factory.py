"""Building the inner backend for a :class:`~tenantmail.config.MailConfig`.

On Django 6.1+ backends are constructed the way ``mail.mailers`` constructs them -- with an
``alias`` -- so an unknown option raises instead of being silently ignored, and Django's SMTP
backend stops falling back to the ``EMAIL_*`` settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables

from . import (
    endpoints,
    freshness,  # noqa: F401  (connects the setting_changed receiver)
)
from .conf import get_settings
from .config import MailConfig
from .exceptions import TenantMailConfigurationError

#: Django 6.1 introduced MAILERS; its backends take an ``alias``.
HAS_MAILERS = hasattr(mail, "mailers")


#: Built in place of Django's SMTP backend: it survives servers that drop a kept-alive session.
SMTP_REPLACEMENTS: Mapping[str, str] = {
    "django.core.mail.backends.smtp.EmailBackend": "tenantmail.smtp.EmailBackend",
}


@cache
def backend_class(path: str) -> type[BaseEmailBackend]:
    try:
        cls = import_string(SMTP_REPLACEMENTS.get(path, path))
    except ImportError as error:
        raise ImportError(f"cannot import {path!r}: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, BaseEmailBackend)):
        raise TypeError(f"{path!r} is not a Django email backend (a BaseEmailBackend subclass)")
    return cls


def inner_alias(config: MailConfig) -> str:
    """The alias an inner backend is built with; it appears in Django's error messages."""
    if config.mailer_alias is not None:
        return config.mailer_alias
    return f"tenantmail:{config.tenant}" if config.own_account else "tenantmail:platform"


@sensitive_variables()  # all: the backend's own __init__ frames below hold the credentials too
def build_backend(config: MailConfig) -> BaseEmailBackend:
    """A new, not yet opened, inner backend for ``config``."""
    try:
        cls = backend_class(config.backend)
    except (ImportError, TypeError) as error:
        # Also an ImportError / TypeError, as import_string() would have raised without us.
        raise _tenant_error_class(type(error))(
            str(error), tenant=config.tenant, setting=_backend_setting(config)
        ) from error
    options = dict(config.options)
    # Tenant accounts only: the platform's own endpoints and timeouts are its own business.
    settings = get_settings() if config.own_account else None
    if settings is not None:
        options = endpoints.tenant_options(cls, options, config, settings)
    if HAS_MAILERS:  # pragma: no branch  (the other way is run by the Django 5.2/6.0 matrix)
        options["alias"] = inner_alias(config)
    try:
        backend = cls(**options)
    except ImproperlyConfigured as error:
        # Anymail's and Django's messages name settings and options, never their values.
        raise option_error(error, config) from error
    except (TypeError, ValueError) as error:
        if config.own_account:
            raise option_error(error, config) from None  # its message may quote values
        # Platform options come from settings or code, like any Anymail user's: the caller gets
        # the inner backend's own exception, as from an unpooled backend.
        error.add_note(
            f"tenantmail: {config.backend} rejected the options from {config.setting_name}"
        )
        raise
    if settings is not None:
        endpoints.harden(backend, config, settings)
    return backend


def option_error(error: Exception, config: MailConfig) -> TenantMailConfigurationError:
    """Options rejected by the backend: a :class:`TenantMailConfigurationError` naming the
    tenant and setting that is *also* an instance of the backend's own exception type
    (``AnymailConfigurationError``, ``InvalidMailer``, ``ValueError``, ...), so code written for
    plain Anymail -- ``pytest.raises(AnymailConfigurationError)`` -- keeps working.

    Configuration errors name options and settings, never values, and are quoted; a TypeError
    or ValueError can quote argument values (the tenant's secrets), so its text is dropped.
    """
    if isinstance(error, ImproperlyConfigured):
        detail = f"{config.backend} rejected the options: {error}"
    else:
        detail = (
            f"{config.backend} rejected the options ({type(error).__name__}); check the option "
            "names and types against the backend's documentation"
        )
    cls = _tenant_error_class(type(error))
    try:
        raised = cls(detail, tenant=config.tenant, setting=config.setting_name)
    except Exception:  # pragma: no cover  (an exception type with an unusual __init__)
        raised = TenantMailConfigurationError(
            detail, tenant=config.tenant, setting=config.setting_name
        )
    return raised


_error_classes: dict[type[Exception], type[TenantMailConfigurationError]] = {}


def _tenant_error_class(original: type[Exception]) -> type[TenantMailConfigurationError]:
    if issubclass(original, TenantMailConfigurationError):  # pragma: no cover  (defensive)
        return original
    cls = _error_classes.get(original)
    if cls is None:
        name = f"TenantMailConfigurationError_{original.__name__}"
        cls = type(
            name,
            (TenantMailConfigurationError, original),
            {"__module__": __name__, "__reduce__": _reduce_combined},
        )
        _error_classes[original] = cls
    return cls


def _reduce_combined(error: BaseException) -> tuple[Any, ...]:
    # The class is made at run time, so pickle cannot find it by name: rebuild it from the
    # backend's own (importable) exception class instead. Celery and retry queues pickle errors.
    original = next(
        base for base in type(error).__bases__ if base is not TenantMailConfigurationError
    )
    return (_rebuild_combined, (original, error.args, dict(error.__dict__)))


def _rebuild_combined(
    original: type[Exception], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    cls = _tenant_error_class(original)
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def _backend_setting(config: MailConfig) -> str:
    return "mail_backend" if config.own_account else config.setting_name
