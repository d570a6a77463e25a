"""Create a tenant's sub-account at an ESP and store it on the tenant (``tenantmail.provisioning``).

An operator's command: it uses the platform's account credentials from settings. Every line it
prints is masked; ``--dry-run`` makes only the ESP's read calls and writes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import get_tenant_model

from tenantmail.conf import get_settings
from tenantmail.exceptions import TenantMailError
from tenantmail.models import TenantMailMixin
from tenantmail.provisioning import ESPS, provision


class Command(BaseCommand):
    help = (
        "Find or create a tenant's sub-account at an ESP (Mailgun subaccount, Postmark server, "
        "SES tenant, Brevo sub-account) and set the tenant's mail backend to it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", metavar="SCHEMA", help="The tenant's schema name.")
        parser.add_argument("--esp", required=True, choices=sorted(ESPS))
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would be done: only read calls to the ESP, nothing written.",
        )
        parser.add_argument(
            "--webhooks",
            action="store_true",
            help="Also register the tenant's tracking webhook with the ESP (Postmark, Brevo).",
        )
        parser.add_argument(
            "--base-url",
            metavar="URL",
            help="The platform's public origin for --webhooks, e.g. https://saas.example.",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Replace the tenant's existing mail settings (refused without it).",
        )

    def handle(
        self,
        *args: Any,
        schema: str,
        esp: str,
        dry_run: bool,
        replace: bool,
        webhooks: bool,
        base_url: str | None,
        **options: Any,
    ) -> None:
        if webhooks != bool(base_url):
            raise CommandError("--webhooks and --base-url go together")
        model = get_tenant_model()
        if not issubclass(model, TenantMailMixin):
            raise CommandError(f"{model._meta.label} does not use TenantMailMixin.")
        manager = model._default_manager.using(get_settings().tenant_db_alias)
        tenant = manager.filter(schema_name=schema).first()
        if tenant is None:
            raise CommandError(f"tenant {schema!r}: no tenant row has this schema name")
        try:
            result = provision(
                tenant, esp, dry_run=dry_run, replace=replace, webhook_base_url=base_url
            )
        except TenantMailError as error:
            raise CommandError(str(error)) from None
        for step in result.steps:
            self.stdout.write(f"  {step}")
        label = "would set" if dry_run else "set"
        for name, value in result.fields.items():
            self.stdout.write(f"  {label} {name} = {value}")
        self.stdout.write(result.summary())
