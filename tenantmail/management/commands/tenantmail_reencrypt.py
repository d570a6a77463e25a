"""Re-encrypt every tenant's encrypted mail settings under the newest key of the key ring.

That is every ``EncryptedJSONField`` of the tenant model (``mail_options``,
``mail_webhook_secrets``, ...).

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
from django_tenants.utils import get_tenant_database_alias, get_tenant_model

from tenantmail import crypto
from tenantmail.fields import EncryptedJSONField
from tenantmail.models import TenantMailMixin


class Command(BaseCommand):
    help = (
        "Re-encrypt every tenant's encrypted mail settings (mail_options, "
        "mail_webhook_secrets) under the newest TENANTMAIL encryption key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Check every row decrypts; write nothing."
        )

    def handle(self, *args: Any, dry_run: bool = False, **options: Any) -> None:
        model = get_tenant_model()
        if not issubclass(model, TenantMailMixin):
            raise CommandError(f"{model._meta.label} does not use TenantMailMixin.")
        # Every encrypted column of the model: mail_options, mail_webhook_secrets, and any a
        # project adds to its tenant model.
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedJSONField)]
        alias = get_tenant_database_alias()
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        failures: list[str] = []
        with transaction.atomic(using=alias):
            for field in fields:
                rotated, failed = self._rotate(model, field, alias, dry_run)
                self.stdout.write(f"{verb} {field.name} of {rotated} tenant(s).")
                if failed:
                    failures.append(
                        f"no configured key decrypts {field.name} of {len(failed)} tenant(s): "
                        f"{', '.join(sorted(failed))}."
                    )
        if failures:
            raise CommandError(
                " ".join(failures)
                + ' Add the key they were encrypted with to TENANTMAIL["ENCRYPTION_KEYS"] '
                "(after the new one) and run again."
            )

    def _rotate(self, model: Any, field: Any, alias: str, dry_run: bool) -> tuple[int, list[str]]:
        # Cast to a plain TextField (reading) and Value (writing) bypass the field's
        # from_db_value/get_prep_value: only raw ciphertext passes through here.
        rows = (
            model._default_manager.using(alias)
            .annotate(token=Cast(field.attname, output_field=models.TextField()))
            .values_list("pk", "schema_name", "token")
        )
        rotated, failed = 0, []
        for pk, schema_name, token in rows.iterator():
            if not token:
                continue
            try:
                new_token = crypto.rotate(token)
            except crypto.InvalidToken:
                failed.append(schema_name)
                continue
            rotated += 1
            if not dry_run:
                model._default_manager.using(alias).filter(pk=pk).update(
                    **{field.attname: Value(new_token, output_field=models.TextField())}
                )
        return rotated, failed
