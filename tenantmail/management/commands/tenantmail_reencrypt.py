"""Re-encrypt every tenant's encrypted mail settings under the newest key of the key ring.

That is every ``EncryptedJSONField`` of the tenant model (``mail_options``,
``mail_webhook_secrets``, and any a project adds).

Run after prepending a key to TENANTMAIL["ENCRYPTION_KEYS"]; then the old key can be removed.
Works on ciphertext only (MultiFernet.rotate): no credential is decrypted into this process'
output, and nothing secret is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models import Value
from django.db.models.functions import Cast
from django.db.models.lookups import Exact
from django_tenants.utils import get_tenant_database_alias, get_tenant_model

from tenantmail import crypto
from tenantmail.fields import EncryptedJSONField
from tenantmail.models import TenantMailMixin


@dataclass
class _Outcome:
    rotated: int = 0
    current: int = 0
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Command(BaseCommand):
    help = (
        "Re-encrypt every tenant's encrypted mail settings (mail_options, "
        "mail_webhook_secrets) under the newest TENANTMAIL encryption key."
    )

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
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedJSONField)]
        alias = get_tenant_database_alias()
        verbose = int(options.get("verbosity", 1)) >= 2
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        failures: list[str] = []
        with transaction.atomic(using=alias):
            for enc_field in fields:
                outcome = self._rotate(model, enc_field, alias, dry_run=dry_run, verbose=verbose)
                self.stdout.write(
                    f"{verb} {enc_field.name} of {outcome.rotated} tenant(s) still on an old key; "
                    f"{outcome.current} already on the newest key."
                )
                if outcome.changed:
                    self.stdout.write(
                        f"left {len(outcome.changed)} tenant(s) whose {enc_field.name} changed "
                        f"since it was read: {', '.join(sorted(outcome.changed))}. Run again to "
                        "check them."
                    )
                if outcome.failed:
                    failures.append(
                        f"no configured key decrypts {enc_field.name} of "
                        f"{len(outcome.failed)} tenant(s): {', '.join(sorted(outcome.failed))}."
                    )
        if failures:
            raise CommandError(
                " ".join(failures)
                + ' Add the key they were encrypted with to TENANTMAIL["ENCRYPTION_KEYS"] '
                "(after the new one) and run again."
            )

    def _rotate(
        self, model: Any, enc_field: Any, alias: str, *, dry_run: bool, verbose: bool
    ) -> _Outcome:
        # Cast to a plain TextField (reading and comparing) and Value (writing) bypass the field's
        # from_db_value/get_prep_value: only raw ciphertext passes through here.
        raw = Cast(enc_field.attname, output_field=models.TextField())
        rows = list(
            model._default_manager.using(alias)
            .annotate(token=raw)
            .values_list("pk", "schema_name", "token")
        )
        if verbose:
            self.stdout.write(f"read {enc_field.name} of {len(rows)} tenant(s).")
        outcome = _Outcome()
        for pk, schema_name, token in rows:
            if not token:
                continue
            if crypto.is_current(token):
                outcome.current += 1
                continue
            try:
                new_token = crypto.rotate(token)
            except crypto.InvalidToken:
                outcome.failed.append(schema_name)
                continue
            if dry_run:
                outcome.rotated += 1
                continue
            # Compare-and-set: a credential saved by another process since the read above (a
            # tenant rotating a leaked key, say) must win over our copy of the old one.
            written = (
                model._default_manager.using(alias)
                .filter(Exact(raw, Value(token, output_field=models.TextField())), pk=pk)
                .update(**{enc_field.attname: Value(new_token, output_field=models.TextField())})
            )
            if written:
                outcome.rotated += 1
            else:
                outcome.changed.append(schema_name)
        return outcome
