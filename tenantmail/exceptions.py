"""Exceptions raised by tenantmail.

Configuration errors subclass :class:`~django.core.exceptions.ImproperlyConfigured` (as Anymail's
do) so that ``fail_silently=True`` can never hide a misconfigured tenant: a silently dropped
message is worse than a loud error.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class TenantMailError(Exception):
    """Base class for every error tenantmail raises."""


class TenantMailConfigurationError(TenantMailError, ImproperlyConfigured):
    """A tenant's mail configuration, or the TENANTMAIL setting, is unusable.

    Messages name the tenant (by schema name) and the setting to fix, and never contain a
    credential.
    """

    def __init__(self, message: str, *, tenant: str | None = None, setting: str | None = None):
        self.tenant = tenant
        self.setting = setting
        prefix = []
        if tenant is not None:
            prefix.append(f"tenant {tenant!r}")
        if setting is not None:
            prefix.append(setting)
        super().__init__(f"{', '.join(prefix)}: {message}" if prefix else message)


class UnknownTenantError(TenantMailConfigurationError):
    """A schema name was given (or is active) for which no tenant row exists."""


class UnresolvedTenantError(TenantMailConfigurationError):
    """A send found no tenant context at all and ``TENANTMAIL["UNRESOLVED"]`` is ``"raise"``."""
