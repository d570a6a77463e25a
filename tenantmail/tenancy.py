"""Which tenant is sending: ``tenant=`` > :func:`sending_as` > django-tenants' connection.

django-tenants only knows a ``FakeTenant(schema_name)`` under ``schema_context()`` (and a schema
name is all a Celery task usually carries), so such tenants are looked up by schema name and kept
for ``TENANT_CACHE_SECONDS``: a credential change made in another process is picked up within that
window, and a burst of sends costs one query per tenant, not one per message.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from django.db import connections, models
from django_tenants.utils import get_tenant_model

from .conf import get_settings
from .exceptions import TenantMailConfigurationError, UnknownTenantError

#: A tenant model instance, or a schema name.
TenantLike = Any

_UNSET: Final = object()
_sending_as: ContextVar[object] = ContextVar("tenantmail_sending_as", default=_UNSET)


@contextmanager
def sending_as(tenant: TenantLike) -> Iterator[None]:
    """Send as ``tenant`` (a tenant instance or schema name) inside the block.

    Contextvar-based, so it is local to the thread or asyncio task that entered it.
    """
    token = _sending_as.set(tenant)
    try:
        yield
    finally:
        _sending_as.reset(token)


@dataclass(frozen=True)
class ActiveTenant:
    schema_name: str
    instance: Any  # the tenant model instance (its get_mail_config() is what we read)


class TenantCache:
    """schema name -> tenant instance (or "no such tenant"), for a few seconds, bounded."""

    MAX_ENTRIES: Final = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.queries = 0  # lookups that reached the database; read by tests and benchmarks

    def get(self, schema_name: str) -> Any:
        ttl = get_settings().tenant_cache_seconds
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(schema_name)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(schema_name)
                return hit[1]
        instance = self._fetch(schema_name)
        if ttl > 0:
            with self._lock:
                self._entries[schema_name] = (now + ttl, instance)
                self._entries.move_to_end(schema_name)
                while len(self._entries) > self.MAX_ENTRIES:
                    self._entries.popitem(last=False)
        return instance

    def _fetch(self, schema_name: str) -> Any:
        self.queries += 1
        model = get_tenant_model()
        manager = model._default_manager.using(get_settings().tenant_db_alias)
        return manager.filter(schema_name=schema_name).first()

    def invalidate(self, schema_name: str | None = None) -> None:
        with self._lock:
            if schema_name is None:
                self._entries.clear()
            else:
                self._entries.pop(schema_name, None)


tenant_cache = TenantCache()


def _connection_tenant() -> object:
    return getattr(connections[get_settings().tenant_db_alias], "tenant", None)


def current_tenant(explicit: TenantLike = None) -> ActiveTenant | None:
    """The tenant whose mail this is, or ``None`` for platform mail (no tenant / public schema)."""
    candidate: object = explicit
    if candidate is None:
        candidate = _sending_as.get()
        if candidate is _UNSET:
            candidate = _connection_tenant()
    return _activate(candidate)


def _activate(candidate: object) -> ActiveTenant | None:
    if candidate is None:
        return None
    if isinstance(candidate, str):
        schema_name, instance = candidate, None
    else:
        name = getattr(candidate, "schema_name", None)
        if not isinstance(name, str):
            raise TenantMailConfigurationError(
                "expected a tenant model instance or a schema name, "
                f"got {type(candidate).__name__}",
                setting="tenant",
            )
        schema_name = name
        # django-tenants' FakeTenant (schema_context) is not a model instance: look it up.
        instance = candidate if isinstance(candidate, models.Model) else None
    if schema_name == get_settings().public_schema_name:
        return None
    if instance is not None and instance.pk is None:
        raise UnknownTenantError(
            "this tenant instance has no primary key: it was deleted (or never saved), so its "
            "mail configuration cannot be trusted",
            tenant=schema_name,
        )
    if instance is None:
        instance = tenant_cache.get(schema_name)
        if instance is None:
            raise UnknownTenantError(
                "no tenant row has this schema name, so there is no mail configuration to use; "
                "check the schema name (tenant= / sending_as() / schema_context())",
                tenant=schema_name,
            )
    return ActiveTenant(schema_name, instance)
