"""tenantmail: each django-tenants tenant's mail through its own django-anymail ESP account.

Public API: :class:`tenantmail.backends.TenantBackend`, :func:`mailer`, :func:`sending_as`,
:func:`carry_tenant`, :class:`TenantThreadPoolExecutor`,
:class:`tenantmail.models.TenantMailMixin`, :mod:`tenantmail.exceptions`, :mod:`tenantmail.pool`.

Importing the package needs no settings (django-tenants reads its settings when imported, so
everything that uses it is imported on first use): ``python -m tenantmail.keygen`` runs in a plain
shell.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import TenantBackend
    from .tenancy import sending_as
    from .threads import TenantThreadPoolExecutor, carry_tenant

__all__ = ["TenantThreadPoolExecutor", "carry_tenant", "mailer", "sending_as"]
__version__ = "0.1.0"

#: Public names imported on first use (PEP 562), so `import tenantmail` does not import
#: django-tenants (see above). Add new package-level names here, not as top-level imports.
_LAZY = {
    "sending_as": ".tenancy",
    "carry_tenant": ".threads",
    "TenantThreadPoolExecutor": ".threads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tenantmail' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def mailer(tenant: Any = None, **overrides: Any) -> TenantBackend:
    """A ready :class:`~tenantmail.backends.TenantBackend` (``tenant=`` pins the tenant)."""
    from .backends import TenantBackend

    return TenantBackend(tenant=tenant, **overrides)
