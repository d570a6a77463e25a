"""Verify tenants' mail settings end to end (see :mod:`tenantmail.verification`).

One line per tenant; exits non-zero when any tenant fails or could not be verified, so it can run
in CI or cron. The test message goes only to a staff user's address (``--send-to``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import get_tenant_model

from tenantmail.conf import get_settings
from tenantmail.models import TenantMailMixin
from tenantmail.verification import VerificationError, is_staff_address, verify


class Command(BaseCommand):
    help = (
        "Verify tenants' mail settings: resolve, connect, TLS, authenticate, sender, and a test "
        "message to a staff address (--send-to). Exits 1 if any tenant fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schemas", nargs="*", metavar="SCHEMA", help="The tenants to verify.")
        parser.add_argument("--all", action="store_true", help="Verify every tenant.")
        parser.add_argument(
            "--send-to",
            metavar="EMAIL",
            help="Send the test message here: must be an active staff user's email address. "
            "Without it the test message stage is skipped.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help='Ignore TENANTMAIL["VERIFY_INTERVAL"] (the per-tenant throttle).',
        )

    def handle(
        self,
        *args: Any,
        schemas: list[str],
        all: bool,
        send_to: str | None,
        force: bool,
        **options: Any,
    ) -> None:
        model = get_tenant_model()
        if not issubclass(model, TenantMailMixin):
            raise CommandError(f"{model._meta.label} does not use TenantMailMixin.")
        if bool(schemas) == all:
            raise CommandError("Name the tenants to verify (schema names), or pass --all.")
        if send_to is not None and not is_staff_address(send_to):
            raise CommandError(
                f"--send-to {send_to!r} is not the email of an active staff user; the test "
                "message goes only to a staff member's own address."
            )
        s = get_settings()
        tenants = model._default_manager.using(s.tenant_db_alias).order_by("schema_name")
        if all:
            tenants = tenants.exclude(schema_name=s.public_schema_name)  # platform mail: no row
            missing: list[str] = []
        else:
            tenants = tenants.filter(schema_name__in=schemas)
            missing = sorted(set(schemas) - {t.schema_name for t in tenants})
        failed = len(missing)
        for name in missing:
            self.stdout.write(f"{name}: no tenant row has this schema name")
        checked = 0
        for tenant in tenants:
            checked += 1
            try:
                report = verify(tenant, send_to=send_to, force=force)
            except VerificationError as error:
                failed += 1
                self.stdout.write(f"{tenant.schema_name}: not verified: {error}")
                continue
            failed += not report.ok
            self.stdout.write(report.line())
        if failed:
            raise CommandError(f"verified {checked} tenant(s): {failed} failed or not verified.")
        self.stdout.write(f"verified {checked} tenant(s): all ok.")
