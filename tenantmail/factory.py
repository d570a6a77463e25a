"""Building the inner backend for a :class:`~tenantmail.config.MailConfig`.

On Django 6.1+ backends are constructed the way ``mail.mailers`` constructs them -- with an
``alias`` -- so an unknown option raises instead of being silently ignored, and Django's SMTP
backend stops falling back to the ``EMAIL_*`` settings.
"""

from __future__ import annotations

from functools import cache

from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables

from .config import MailConfig
from .exceptions import TenantMailConfigurationError

#: Django 6.1 introduced MAILERS; its backends take an ``alias``.
HAS_MAILERS = hasattr(mail, "mailers")


@cache
def backend_class(path: str) -> type[BaseEmailBackend]:
    try:
        cls = import_string(path)
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
        raise TenantMailConfigurationError(
            str(error), tenant=config.tenant, setting=_backend_setting(config)
        ) from error
    options = dict(config.options)
    if HAS_MAILERS:  # pragma: no branch  (the other way is run by the Django 5.2/6.0 matrix)
        options["alias"] = inner_alias(config)
    try:
        return cls(**options)
    except ImproperlyConfigured as error:
        # Anymail's and Django's messages name missing/unknown options, never their values.
        raise TenantMailConfigurationError(
            f"{config.backend} rejected the options: {error}",
            tenant=config.tenant,
            setting=config.setting_name,
        ) from error
    except (TypeError, ValueError) as error:
        # e.g. SMTP's "use_tls and use_ssl are mutually exclusive", or a bad keyword on <6.1.
        # The original message is dropped: a TypeError can quote argument values.
        raise TenantMailConfigurationError(
            f"{config.backend} rejected the options ({type(error).__name__}); check the option "
            "names and types against the backend's documentation",
            tenant=config.tenant,
            setting=config.setting_name,
        ) from None


def _backend_setting(config: MailConfig) -> str:
    return "mail_backend" if config.own_account else config.setting_name
