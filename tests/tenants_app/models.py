from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

from tenantmail.models import TenantMailMixin


class Client(TenantMixin, TenantMailMixin):  # type: ignore[misc]
    name = models.CharField(max_length=100)
    auto_create_schema = True

    def __str__(self) -> str:
        return self.name


class Domain(DomainMixin):  # type: ignore[misc]
    pass
