"""Sending validated, attributed events on: signals inside the tenant's schema, then bookkeeping.

Receivers run with the tenant's schema active (``tenant_context``), so a receiver that writes to
a tenant table writes to the right tenant, and ``tenantmail.tenancy.current_tenant()`` answers
with the event's tenant. Receiver errors propagate (a 500: the ESP retries), as in Anymail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from anymail.signals import AnymailTrackingEvent
from django_tenants.utils import schema_context, tenant_context

from .. import suppression
from ..conf import get_settings
from ..tenancy import tenant_cache
from . import outbox

if TYPE_CHECKING:
    from .views import Event, TenantWebhookMixin


def deliver(view: TenantWebhookMixin, groups: Mapping[str | None, Sequence[Event]]) -> None:
    esp_name = view.esp_name
    for tenant, events in groups.items():
        with _context(view, tenant):
            for event in events:
                view.signal.send(sender=view.anymail_view, event=event, esp_name=esp_name)
                view.tenant_signal.send(
                    sender=type(view), tenant=tenant, event=event, esp_name=esp_name
                )
        tracking = [e for e in events if isinstance(e, AnymailTrackingEvent)]
        if tracking:
            outbox.record_events(tenant, tracking)
            suppression.record_events(tenant, tracking, esp_name)


def _context(view: TenantWebhookMixin, tenant: str | None) -> AbstractContextManager[Any]:
    if tenant is None:
        context: AbstractContextManager[Any] = schema_context(get_settings().public_schema_name)
        return context
    url_tenant = view.webhook_tenant
    instance = (
        url_tenant.instance
        if url_tenant is not None and url_tenant.schema_name == tenant
        else tenant_cache.get(tenant)
    )
    tenant_scope: AbstractContextManager[Any] = tenant_context(instance)
    return tenant_scope
