"""Re-encrypt every tenant's mail_options under the newest key of the key ring.

Run after prepending a key to TENANTMAIL["ENCRYPTION_KEYS"]; then the old key can be removed.
Works on ciphertext only (MultiFernet.rotate): no credential is decrypted into this process'
output, and nothing secret is printed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models import Value
from django.db.models.functions import Cast
from django.db.models.lookups import Exact
from django_tenants.utils import get_tenant_database_alias, get_tenant_model

from tenantmail import crypto
from tenantmail.models import TenantMailMixin


class Command(BaseCommand):
    help = "Re-encrypt every tenant's mail_options under the newest TENANTMAIL encryption key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the rows still on an old key (and any no key decrypts); write nothing.",
        )

    def handle(self, *args: Any, dry_run: bool = False, **options: Any) -> None:
        model = get_tenant_model()
        if not issubclass(model, TenantMailMixin):
            raise CommandError(f"{model._meta.label} does not use TenantMailMixin.")
        field = model._meta.get_field("mail_options")
        alias = get_tenant_database_alias()
        # Cast to a plain TextField (reading and comparing) and Value (writing) bypass the field's
        # from_db_value/get_prep_value: only raw ciphertext passes through here.
        raw = Cast(field.attname, output_field=models.TextField())
        rows = list(
            model._default_manager.using(alias)
            .annotate(token=raw)
            .values_list("pk", "schema_name", "token")
        )
        if int(options.get("verbosity", 1)) >= 2:
            self.stdout.write(f"read mail_options of {len(rows)} tenant(s).")
        rotated, current, changed, failed = 0, 0, [], []
        with transaction.atomic(using=alias):
            for pk, schema_name, token in rows:
                if not token:
                    continue
                if crypto.is_current(token):
                    current += 1
                    continue
                try:
                    new_token = crypto.rotate(token)
                except crypto.InvalidToken:
                    failed.append(schema_name)
                    continue
                if dry_run:
                    rotated += 1
                    continue
                # Compare-and-set: a credential saved by another process since the read above
                # (a tenant rotating a leaked key, say) must win over our copy of the old one.
                written = (
                    model._default_manager.using(alias)
                    .filter(Exact(raw, Value(token, output_field=models.TextField())), pk=pk)
                    .update(**{field.attname: Value(new_token, output_field=models.TextField())})
                )
                if written:
                    rotated += 1
                else:
                    changed.append(schema_name)
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        self.stdout.write(
            f"{verb} mail_options of {rotated} tenant(s) still on an old key; "
            f"{current} already on the newest key."
        )
        if changed:
            self.stdout.write(
                f"left {len(changed)} tenant(s) changed since they were read: "
                f"{', '.join(sorted(changed))}. Run again to check them."
            )
        if failed:
            raise CommandError(
                f"no configured key decrypts mail_options of {len(failed)} tenant(s): "
                f"{', '.join(sorted(failed))}. Add the key they were encrypted with to "
                'TENANTMAIL["ENCRYPTION_KEYS"] (after the new one) and run again.'
            )
