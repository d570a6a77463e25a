"""Sending validated, attributed events on: signals inside the tenant's schema, then bookkeeping.

Receivers run with the tenant's schema active (what ``tenant_context`` does), so a receiver that
writes to a tenant table writes to the right tenant, and ``tenantmail.tenancy.current_tenant()``
answers with the event's tenant. Receiver errors propagate (a 500: the ESP retries), as in
Anymail. With no receiver connected nothing can query, so the schema is not switched at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from anymail.signals import AnymailTrackingEvent
from django.db import connections

from .. import suppression
from ..conf import get_settings
from ..tenancy import tenant_cache
from . import outbox

if TYPE_CHECKING:
    from .views import Event, TenantWebhookMixin


def deliver(view: TenantWebhookMixin, groups: Mapping[str | None, Sequence[Event]]) -> None:
    esp_name = view.esp_name
    # No receiver, nothing that could query: skip the schema switch (django-tenants clears the
    # ContentType cache on each switch and re-issues SET search_path at the next query). Any
    # receiver at all counts (has_listeners(sender) would take each signal's lock per request).
    listened = bool(view.signal.receivers or view.tenant_signal.receivers)
    connection = connections[get_settings().tenant_db_alias] if listened else None
    for tenant, events in groups.items():
        if connection is not None:
            with _Scope(connection, _instance(view, tenant)):
                for event in events:
                    view.signal.send(sender=view.anymail_view, event=event, esp_name=esp_name)
                    view.tenant_signal.send(
                        sender=type(view), tenant=tenant, event=event, esp_name=esp_name
                    )
        tracking = [e for e in events if isinstance(e, AnymailTrackingEvent)]
        if tracking:
            outbox.record_events(tenant, tracking)
            suppression.record_events(tenant, tracking, esp_name)


def _instance(view: TenantWebhookMixin, tenant: str | None) -> Any:
    """The tenant instance to switch to (``None``: the public schema)."""
    if tenant is None:
        return None
    url_tenant = view.webhook_tenant
    if url_tenant is not None and url_tenant.schema_name == tenant:
        return url_tenant.instance
    return tenant_cache.get(tenant)


class _Scope:
    """django-tenants' ``tenant_context`` (or ``schema_context(public)`` for ``None``) on a
    connection looked up once per request: theirs re-reads settings and the thread's connection
    handler on every enter and exit. Like theirs, switching only marks the connection: the
    ``SET search_path`` is issued at its next query, if any."""

    __slots__ = ("_connection", "_previous", "_target")

    def __init__(self, connection: Any, target: Any) -> None:
        self._connection = connection
        self._target = target
        self._previous: Any = None

    def __enter__(self) -> None:
        self._previous = getattr(self._connection, "tenant", None)
        if self._target is None:
            self._connection.set_schema_to_public()
        else:
            self._connection.set_tenant(self._target)

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            self._connection.set_schema_to_public()
        else:
            self._connection.set_tenant(self._previous)
