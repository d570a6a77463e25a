"""The backend a queued row is sent through: ``TenantBackend``, or a ``MAILERS`` alias (6.1).

One rule set, applied twice: at enqueue (so what cannot be sent is refused in the request,
never a surprise in the worker) and in the worker (settings may have changed in between).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..backends import TenantBackend
from ..conf import get_settings
from ..exceptions import TenantMailConfigurationError
from ..tenancy import current_tenant

SETTING = "QueuedBackend mailer"


def delivery_backend(mailer: str, options: Mapping[str, Any], schema: str) -> TenantBackend:
    """The backend that sends a row of tenant ``schema`` (blank: platform mail).

    ``mailer`` (a ``MAILERS`` alias) must name a ``TenantBackend`` that is either not pinned to
    a tenant or pinned to this same one: a row for tenant A is never sent through an alias
    pinned to tenant B. Overrides go with no mailer only (a mailer's are in its ``OPTIONS``).
    """
    if not mailer:
        return TenantBackend(**options)
    tenant = schema or None
    if options:
        raise TenantMailConfigurationError(
            f"backend overrides {sorted(options)} cannot be combined with mailer={mailer!r}: "
            f"put them in MAILERS[{mailer!r}]['OPTIONS'], or drop mailer=",
            tenant=tenant,
            setting=SETTING,
        )
    try:
        from django.core.mail import mailers
    except ImportError:
        raise TenantMailConfigurationError(
            f"mailer={mailer!r} needs Django 6.1's MAILERS; leave it blank to send "
            "through TenantBackend",
            tenant=tenant,
            setting=SETTING,
        ) from None
    backend = mailers[mailer]  # MailerDoesNotExist / InvalidMailer: ImproperlyConfigured
    if not isinstance(backend, TenantBackend):
        # A QueuedBackend would queue forever; any other backend would ignore the tenant.
        raise TenantMailConfigurationError(
            f"MAILERS[{mailer!r}] must be a tenantmail.backends.TenantBackend, "
            f"not {type(backend).__name__}",
            tenant=tenant,
            setting=SETTING,
        )
    if backend.tenant is not None:
        pinned = current_tenant(backend.tenant)
        pinned_schema = pinned.schema_name if pinned is not None else ""
        if pinned_schema == get_settings().public_schema_name:
            pinned_schema = ""
        if pinned_schema != schema:
            raise TenantMailConfigurationError(
                f"MAILERS[{mailer!r}] is pinned to tenant {pinned_schema or '(platform)'!r}, "
                f"but this message is for {schema or '(platform)'!r}: a message is only ever "
                "sent through its own tenant; name an unpinned TenantBackend alias",
                tenant=tenant,
                setting=SETTING,
            )
    return backend
