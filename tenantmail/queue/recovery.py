"""Bring back what a dead worker left behind; idempotent and safe to run from many places.

Two kinds of row are stale: ``sending`` with an expired lease (the worker died mid-send), and
``queued`` rows overdue by more than a lease whose task was enqueued more than a lease ago (the
task was lost: a worker died after taking the task but before claiming the row, or enqueueing
failed). Both get a fresh task; the claim makes any duplicate task a no-op. A row that exhausted
``MAX_ATTEMPTS`` by dying mid-send every time (a poison message) is failed instead.
"""

from __future__ import annotations

import datetime
import logging
import time

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..conf import get_settings
from ..models import OutboxMessage
from . import signals
from .conf import get_queue_settings
from .tasks import enqueue_task

logger = logging.getLogger("tenantmail.queue")

Status = OutboxMessage.Status
BATCH = 1000

_last_run = -float("inf")


def recover_stale(*, now: datetime.datetime | None = None, limit: int = BATCH) -> int:
    """Re-enqueue (or fail) up to ``limit`` stale rows; returns how many were handled."""
    qs = get_queue_settings()
    now = now or timezone.now()
    lease = datetime.timedelta(seconds=qs.lease_seconds)
    db = get_settings().tenant_db_alias
    stale = Q(status=Status.SENDING, lease_expires_at__lt=now) | Q(
        Q(enqueued_at__lt=now - lease) | Q(enqueued_at__isnull=True),
        status=Status.QUEUED,
        next_attempt_at__lt=now - lease,
    )
    failed: list[OutboxMessage] = []
    with transaction.atomic(using=db):
        rows = list(
            OutboxMessage.objects.using(db)
            .select_for_update(skip_locked=True)
            .filter(stale)
            .order_by("next_attempt_at")[:limit]
        )
        requeued = []
        for row in rows:
            if row.status == Status.SENDING:
                row.claim_token, row.lease_expires_at = "", None
                if row.attempts >= qs.max_attempts:
                    row.status = Status.FAILED
                    row.last_error = (
                        f"the worker stopped mid-send on each of {row.attempts} attempt(s) "
                        "(lease expired); not retried again (MAX_ATTEMPTS)"
                    )
                    failed.append(row)
                    continue
                row.status = Status.QUEUED
                row.next_attempt_at = now
                row.last_error = (
                    f"attempt {row.attempts}: the worker stopped mid-send (lease expired); "
                    "re-enqueued, it may have been sent already (same Message-ID)"
                )
            row.enqueued_at = now
            requeued.append((row.pk, row.priority))
        OutboxMessage.objects.using(db).bulk_update(
            rows,
            [
                "status",
                "claim_token",
                "lease_expires_at",
                "next_attempt_at",
                "enqueued_at",
                "last_error",
            ],
        )
        transaction.on_commit(lambda: _enqueue(requeued), using=db)
    for row in failed:
        signals.message_failed.send(
            sender=OutboxMessage, outbox=row, tenant=row.tenant_schema or None, error=None
        )
    if rows:
        logger.warning(
            "tenantmail: recovered %d stale outbox message(s) (%d failed for good)",
            len(rows),
            len(failed),
        )
    return len(rows)


def _enqueue(requeued: list[tuple[int, int]]) -> None:
    for outbox_id, priority in requeued:
        enqueue_task(outbox_id, priority=priority)


def maybe_recover() -> int:
    """Run :func:`recover_stale` at most every ``RECOVER_EVERY_SECONDS`` in this process."""
    global _last_run
    every = get_queue_settings().recover_every_seconds
    now = time.monotonic()
    if now - _last_run < every:
        return 0
    _last_run = now
    return recover_stale()
