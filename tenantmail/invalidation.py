"""Forgetting what we knew about a tenant when its row changes in this process.

A change is forgotten twice: at once (the very next send in this thread sees it) and again when
the transaction commits -- between the two, another thread reading the still-committed old row
could have cached it. Renames are covered by forgetting by primary key as well as by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from .pool import get_pool
from .tenancy import tenant_cache


def forget_tenant(schema_name: str) -> None:
    """Drop the cached tenant row and close the tenant's idle connections.

    Correctness never depends on the pool part (a changed credential has a new fingerprint,
    hence a new pool key); it frees the old connection now instead of at IDLE_TIMEOUT.
    """
    tenant_cache.invalidate(schema_name)
    get_pool().drop(schema_name)


def forget_instance(schema_name: str | None, pk: Any) -> None:
    """Forget a tenant by its current name *and* every name cached for its primary key."""
    names = set(tenant_cache.invalidate_pk(pk)) if pk is not None else set()
    if schema_name is not None:
        names.add(schema_name)
    for name in names:
        forget_tenant(name)


def forget_all_tenants(using: str | None = None) -> None:
    """Drop the whole tenant cache now and when the current transaction on ``using`` commits."""
    tenant_cache.invalidate()
    _again_on_commit(tenant_cache.invalidate, using)


def tenant_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    schema_name = getattr(instance, "schema_name", None)
    if not isinstance(schema_name, str):
        schema_name = None
    pk = getattr(instance, "pk", None)
    if schema_name is None and pk is None:
        return
    forget_instance(schema_name, pk)
    _again_on_commit(lambda: forget_instance(schema_name, pk), kwargs.get("using"))


def _again_on_commit(forget: Callable[[], None], using: str | None) -> None:
    # Outside a transaction the change is already visible to every reader: once is enough.
    connection = transaction.get_connection(using)
    if connection.in_atomic_block:
        connection.on_commit(forget)
