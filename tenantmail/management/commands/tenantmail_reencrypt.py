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
class _Counts:
    rotated: int = 0
    current: int = 0
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
        # Cast to a plain TextField (reading and comparing) and Value (writing) bypass the
        # fields' from_db_value/get_prep_value: only raw ciphertext passes through here.
        raw = {f.name: Cast(f.attname, output_field=models.TextField()) for f in fields}
        manager = model._default_manager.using(alias)
        rows = list(
            manager.annotate(**{f"_{n}": e for n, e in raw.items()}).values(
                "pk", "schema_name", *(f"_{n}" for n in raw)
            )
        )
        if int(options.get("verbosity", 1)) >= 2:
            self.stdout.write(f"read {', '.join(raw)} of {len(rows)} tenant(s).")
        counts = {name: _Counts() for name in raw}
        changed: list[str] = []
        with transaction.atomic(using=alias):
            for row in rows:
                new_tokens: dict[str, str] = {}
                for name in raw:
                    token = row[f"_{name}"]
                    if not token:
                        continue
                    if crypto.is_current(token):
                        counts[name].current += 1
                        continue
                    try:
                        new_tokens[name] = crypto.rotate(token)
                    except crypto.InvalidToken:
                        counts[name].failed.append(row["schema_name"])
                if not new_tokens:
                    continue
                # Compare-and-set on every column read: a credential saved by another process
                # since the read above (a tenant rotating a leaked key, say) must win over our
                # copy of the old one, and the row is then left alone (and not locked) entirely.
                unchanged = [
                    Exact(raw[name], Value(row[f"_{name}"], output_field=models.TextField()))
                    for name in new_tokens
                ]
                written = dry_run or manager.filter(*unchanged, pk=row["pk"]).update(
                    **{
                        model._meta.get_field(name).attname: Value(
                            token, output_field=models.TextField()
                        )
                        for name, token in new_tokens.items()
                    }
                )
                if written:
                    for name in new_tokens:
                        counts[name].rotated += 1
                else:
                    changed.append(row["schema_name"])
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        for name, count in counts.items():
            self.stdout.write(
                f"{verb} {name} of {count.rotated} tenant(s) still on an old key; "
                f"{count.current} already on the newest key."
            )
        if changed:
            self.stdout.write(
                f"left {len(changed)} tenant(s) whose mail settings changed since they were "
                f"read: {', '.join(sorted(changed))}. Run again to check them."
            )
        failures = [
            f"no configured key decrypts {name} of {len(count.failed)} tenant(s): "
            f"{', '.join(sorted(count.failed))}."
            for name, count in counts.items()
            if count.failed
        ]
        if failures:
            raise CommandError(
                " ".join(failures)
                + ' Add the key they were encrypted with to TENANTMAIL["ENCRYPTION_KEYS"] '
                "(after the new one) and run again."
            )
