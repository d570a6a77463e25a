"""tenantmail: each django-tenants tenant's mail through its own django-anymail ESP account.

Public API: :class:`tenantmail.backends.TenantBackend`, :func:`mailer`, :func:`sending_as`,
:func:`carry_tenant`, :class:`TenantThreadPoolExecutor`,
:class:`tenantmail.models.TenantMailMixin`, :mod:`tenantmail.exceptions`, :mod:`tenantmail.pool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tenancy import sending_as
from .threads import TenantThreadPoolExecutor, carry_tenant

if TYPE_CHECKING:
    from .backends import TenantBackend

__all__ = ["TenantThreadPoolExecutor", "carry_tenant", "mailer", "sending_as"]
__version__ = "0.1.0"


def mailer(tenant: Any = None, **overrides: Any) -> TenantBackend:
    """A ready :class:`~tenantmail.backends.TenantBackend` (``tenant=`` pins the tenant)."""
    from .backends import TenantBackend

    return TenantBackend(tenant=tenant, **overrides)
