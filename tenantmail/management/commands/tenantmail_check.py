"""Check every tenant's mail settings the way a send would, and list every problem.

For CI and deploys: exits non-zero when anything is wrong. Each line names the tenant (schema) and
the setting to fix; no value is ever printed (they may be credentials).
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import get_tenant_model

from tenantmail.checks import check_settings
from tenantmail.conf import get_settings
from tenantmail.config import _source
from tenantmail.diagnosis import tenant_problems
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.models import TenantMailMixin, TenantMailSource
from tenantmail.tenancy import ActiveTenant


class Command(BaseCommand):
    help = (
        "Validate every tenant's mail settings (and TENANTMAIL) as a send would; list every "
        "problem; exit 1 if there is any."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "schemas", nargs="*", metavar="SCHEMA", help="Only these tenants (default: all)."
        )

    def handle(self, *args: Any, schemas: list[str], **options: Any) -> None:
        model = get_tenant_model()
        if not issubclass(model, TenantMailMixin):
            raise CommandError(f"{model._meta.label} does not use TenantMailMixin.")
        platform = [m for m in check_settings() if m.level >= checks.ERROR]
        for message in platform:
            self.stdout.write(f"platform: {message.msg} [{message.id}]")
        if platform:
            # Every tenant is checked against settings that do not load: report them alone.
            raise CommandError(f"{len(platform)} problem(s) in the TENANTMAIL settings.")

        s = get_settings()
        tenants = model._default_manager.using(s.tenant_db_alias).order_by("schema_name")
        if schemas:
            tenants = tenants.filter(schema_name__in=schemas)
            missing = sorted(set(schemas) - {t.schema_name for t in tenants})
        else:
            tenants = tenants.exclude(schema_name=s.public_schema_name)  # platform mail: no row
            missing = []
        found = [
            TenantMailConfigurationError("no tenant row has this schema name", tenant=name)
            for name in missing
        ]
        checked = 0
        for tenant in tenants:
            checked += 1
            found += _problems(tenant)
        for problem in found:
            self.stdout.write(str(problem))
        bad = len({p.tenant for p in found})
        if found:
            raise CommandError(
                f"checked {checked} tenant(s): {len(found)} problem(s) in {bad} tenant(s)."
            )
        self.stdout.write(f"checked {checked} tenant(s): no problems.")


def _problems(tenant: Any) -> list[TenantMailConfigurationError]:
    schema = str(tenant.schema_name)
    try:
        source = _source(ActiveTenant(schema, tenant))  # get_mail_config(), as a send calls it
    except TenantMailConfigurationError as error:
        return [error]
    return tenant_problems(schema, source or TenantMailSource(backend=None))
