from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class TenantMailConfig(AppConfig):
    name = "tenantmail"
    verbose_name = "Tenant mail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .invalidation import tenant_changed
        from .queue import checks as _queue_checks  # noqa: F401  (the queue's, when it is used)

        tenant_model = getattr(settings, "TENANT_MODEL", None)
        if tenant_model:
            # A credential saved in *this* process is used by the very next send; other
            # processes pick it up within TENANT_CACHE_SECONDS.
            post_save.connect(tenant_changed, sender=tenant_model, dispatch_uid="tenantmail-save")
            post_delete.connect(
                tenant_changed, sender=tenant_model, dispatch_uid="tenantmail-delete"
            )
