"""Forgetting what we knew about a tenant when its row changes in this process."""

from __future__ import annotations

from typing import Any

from .pool import get_pool
from .tenancy import tenant_cache


def forget_tenant(schema_name: str) -> None:
    """Drop the cached tenant row and close the tenant's idle connections.

    Correctness never depends on this (a changed credential has a new fingerprint, hence a new
    pool key); it frees the old connection now instead of at IDLE_TIMEOUT.
    """
    tenant_cache.invalidate(schema_name)
    get_pool().drop(schema_name)


def tenant_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    schema_name = getattr(instance, "schema_name", None)
    if isinstance(schema_name, str):
        forget_tenant(schema_name)
