"""The benchmark's tenants: rows only, no schemas (creating 10,000 schemas would take hours).

``TenantBackend`` never needs a tenant's schema: in request context it reads the loaded model
instance, and under ``schema_context("t00042")`` it looks the row up in the tenant table, which
lives in ``public``. Rows are reused across runs; their ``api_url`` is repointed at this run's
fake ESP (a new port each run).
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.db import connection
from django_tenants.utils import get_tenant_model

from .common import INPROC_SCHEMA, TEST_BACKEND, schema, tenant_key

#: Options of the in-process tenant (row 6): shaped like the Mailgun tenants' (the URL is never
#: contacted), so TenantBackend validates and fingerprints as much per send as in rows 3-5.
INPROC_OPTIONS = {
    "api_key": tenant_key(INPROC_SCHEMA),
    "sender_domain": f"mg.{INPROC_SCHEMA}.example",
    "api_url": "https://127.0.0.1:9/mailgun/v3/",
}


def migrate() -> None:
    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)


def _fields(schema_name: str, api_url: str) -> dict[str, Any]:
    if schema_name == INPROC_SCHEMA:
        return {
            "mail_backend": TEST_BACKEND,
            "mail_options": dict(INPROC_OPTIONS),
            "mail_defaults": {"from_email": f"hello@{schema_name}.example"},
        }
    return {
        "mail_backend": "mailgun",
        "mail_options": {
            "api_key": tenant_key(schema_name),
            "sender_domain": f"mg.{schema_name}.example",
            "api_url": api_url,
        },
        "mail_defaults": {"from_email": f"hello@{schema_name}.example"},
    }


def ensure_tenants(count: int, api_url: str) -> dict[str, int]:
    """Create the missing tenant rows and point every row's ``api_url`` at ``api_url``."""
    model = get_tenant_model()
    wanted = [schema(i) for i in range(count)] + [INPROC_SCHEMA]
    existing = dict(model.objects.filter(schema_name__in=wanted).values_list("schema_name", "pk"))
    missing = [name for name in wanted if name not in existing]
    model.objects.bulk_create(
        [model(schema_name=name, name=name, **_fields(name, api_url)) for name in missing],
        batch_size=1000,
    )
    present = [name for name in wanted if name in existing]
    _update_options(model, [(existing[name], _fields(name, api_url)) for name in present])
    return {"created": len(missing), "updated": len(present)}


def _update_options(model: Any, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """One parameterised UPDATE per row, pipelined (much faster than a 10,000-way CASE)."""
    if not rows:
        return
    fields = {name: model._meta.get_field(name) for name in rows[0][1]}
    table = connection.ops.quote_name(model._meta.db_table)
    assignments = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields.values())
    pk_column = connection.ops.quote_name(model._meta.pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {pk_column} = %s"  # noqa: S608 (names from _meta)
    params = [
        [f.get_db_prep_save(values[name], connection) for name, f in fields.items()] + [pk]
        for pk, values in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def load_tenants(count: int) -> list[Any]:
    """The tenant instances, as a request would have them (decrypted options and all)."""
    model = get_tenant_model()
    by_schema = {
        t.schema_name: t
        for t in model.objects.filter(schema_name__in=[schema(i) for i in range(count)])
    }
    return [by_schema[schema(i)] for i in range(count)]


def load_inproc_tenant() -> Any:
    return get_tenant_model().objects.get(schema_name=INPROC_SCHEMA)
