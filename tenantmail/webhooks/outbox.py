"""Delivery status on the queued-sending outbox, when there is one.

``tenantmail.models.OutboxMessage`` belongs to the queue (``tenantmail.queue``); it is looked up
lazily so this package works with or without it. Updates are scoped to the event's tenant (a
tenant cannot touch another tenant's rows by quoting their message ids) and only move forward in
time, so a replayed or late event is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from anymail.signals import AnymailTrackingEvent
from django.apps import apps
from django.db.models import Q
from django.utils import timezone

from ..conf import get_settings

_OUTBOX = ("tenantmail", "OutboxMessage")


@cache
def outbox_model() -> Any:
    """The ``OutboxMessage`` model, or ``None`` while the queue is not installed."""
    try:
        return apps.get_model(*_OUTBOX)
    except LookupError:
        return None


def _message_ids(message_id: str) -> list[str]:
    # Some ESPs report the Message-ID with angle brackets at send time and without in events.
    bare = message_id.strip().strip("<>")
    return [bare, f"<{bare}>"]


def record_events(tenant: str | None, events: Sequence[AnymailTrackingEvent]) -> int:
    """Set ``delivery_status``/``delivery_updated_at`` of the matching outbox rows."""
    model = outbox_model()
    if model is None:
        return 0
    # The queue stores platform mail with a blank tenant_schema (not the public schema's name).
    schema = tenant or ""
    updated = 0
    for event in events:
        if not event.message_id:
            continue
        when = event.timestamp or timezone.now()
        updated += (
            model._default_manager.using(get_settings().tenant_db_alias)
            .filter(tenant_schema=schema, esp_message_id__in=_message_ids(str(event.message_id)))
            .filter(Q(delivery_updated_at__isnull=True) | Q(delivery_updated_at__lte=when))
            .update(delivery_status=str(event.event_type), delivery_updated_at=when)
        )
    return int(updated)
