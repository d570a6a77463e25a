"""Which tenant is sending: ``tenant=`` > :func:`sending_as` > django-tenants' connection.

django-tenants only knows a ``FakeTenant(schema_name)`` under ``schema_context()`` (and a schema
name is all a Celery task usually carries), so such tenants are looked up by schema name and kept
for ``TENANT_CACHE_SECONDS``: a credential change made in another process is picked up within that
window, and a burst of sends costs one query per tenant, not one per message.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, NamedTuple

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

    ``sending_as(None)`` marks platform mail. Contextvar-based: asyncio tasks and
    ``asyncio.to_thread`` inherit it, a ``ThreadPoolExecutor`` does not -- wrap the function
    with :func:`tenantmail.carry_tenant` (or use :class:`tenantmail.TenantThreadPoolExecutor`).
    """
    token = _sending_as.set(tenant)
    try:
        yield
    finally:
        _sending_as.reset(token)


class ActiveTenant(NamedTuple):
    """The tenant a send is for. (A named tuple: built on every send, ~4x cheaper than a frozen
    dataclass.)"""

    schema_name: str
    instance: Any  # the tenant model instance (its get_mail_config() is what we read)


class TenantCache:
    """schema name -> tenant instance (or "no such tenant"), for a few seconds, bounded.

    Entries are also indexed by primary key, so a renamed tenant's *old* name can be forgotten
    when only the new row is known (``post_save`` after a schema rename). A lookup that was
    already reading the database when something was invalidated is not cached: it may have read
    the row as it was before the change.
    """

    MAX_ENTRIES: Final = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._names_by_pk: dict[Any, set[str]] = {}
        self._generation = 0  # bumped by every invalidation
        self.queries = 0  # lookups that reached the database; read by tests and benchmarks

    def get(self, schema_name: str) -> Any:
        ttl = get_settings().tenant_cache_seconds
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(schema_name)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(schema_name)
                return hit[1]
            generation = self._generation
        instance = self._fetch(schema_name)
        if ttl > 0:
            with self._lock:
                if generation != self._generation:
                    return instance  # invalidated while we read: maybe stale, don't keep it
                self._pop(schema_name)
                self._entries[schema_name] = (now + ttl, instance)
                if instance is not None:
                    self._names_by_pk.setdefault(instance.pk, set()).add(schema_name)
                while len(self._entries) > self.MAX_ENTRIES:
                    self._pop(next(iter(self._entries)))
        return instance

    def _fetch(self, schema_name: str) -> Any:
        self.queries += 1
        model = get_tenant_model()
        manager = model._default_manager.using(get_settings().tenant_db_alias)
        return manager.filter(schema_name=schema_name).first()

    def _pop(self, schema_name: str) -> None:
        """Remove one entry and its pk index (call with the lock held)."""
        entry = self._entries.pop(schema_name, None)
        if entry is not None and entry[1] is not None:
            names = self._names_by_pk.get(entry[1].pk)
            if names is not None:
                names.discard(schema_name)
                if not names:
                    del self._names_by_pk[entry[1].pk]

    def invalidate(self, schema_name: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if schema_name is None:
                self._entries.clear()
                self._names_by_pk.clear()
            else:
                self._pop(schema_name)

    def invalidate_pk(self, pk: Any) -> list[str]:
        """Forget every name cached for the tenant with this primary key; returns those names."""
        with self._lock:
            self._generation += 1
            names = sorted(self._names_by_pk.get(pk, ()))
            for name in names:
                self._pop(name)
        return names

    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at fork(): in the child it would
        # stay held forever, and the first lookup would hang.
        self._lock = threading.Lock()


#: ``ActiveTenant(a, b)`` runs the named tuple's Python-level ``__new__``; this does not.
_new_active = tuple.__new__

tenant_cache = TenantCache()
os.register_at_fork(after_in_child=lambda: tenant_cache._after_fork_in_child())


def _connection_tenant() -> object:
    return getattr(connections[get_settings().tenant_db_alias], "tenant", None)


def current_tenant(explicit: TenantLike = None) -> ActiveTenant | None:
    """The tenant whose mail this is, or ``None`` for platform mail.

    Platform mail is *said*: ``tenant="public"`` or the public tenant instance,
    ``sending_as(None)``, or a connection whose tenant is the public tenant's model instance (a
    request to the public site through django-tenants' middleware, ``tenant_context(public)``).
    Anything else without a tenant is *unresolved* and handled by ``TENANTMAIL["UNRESOLVED"]``:
    no connection tenant, or django-tenants' ``FakeTenant("public")``, which is what a new
    thread's connection, a management command or a worker starts with, and which
    ``schema_context("public")`` leaves behind looking exactly the same.
    """
    candidate: object = explicit
    if candidate is None:
        candidate = _sending_as.get()
        if candidate is _UNSET:
            candidate = _connection_tenant()
            if candidate is None or (
                not isinstance(candidate, models.Model)
                and getattr(candidate, "schema_name", None) == get_settings().public_schema_name
            ):
                from .unresolved import unresolved

                unresolved()  # raises, or warns: then it is platform mail
                return None
    return _activate(candidate)


def _activate(candidate: object) -> ActiveTenant | None:
    if candidate is None:
        return None
    if isinstance(candidate, models.Model):
        # The warm path (a request's tenant instance): no Model.pk property, no NamedTuple
        # __new__ -- each costs more than the rest of this function.
        fields = vars(candidate)
        name = fields.get("schema_name")
        pk = candidate._meta.pk
        if isinstance(name, str) and pk is not None and fields.get(pk.attname) is not None:
            if name == get_settings().public_schema_name:
                return None
            return _new_active(ActiveTenant, (name, candidate))
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
