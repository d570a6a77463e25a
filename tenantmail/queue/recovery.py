"""Bring back what a dead worker left behind; idempotent and safe to run from many places.

Stale rows: ``sending`` with an expired lease (the worker died mid-batch), and ``queued`` rows
whose drain was lost. With django-tasks-db a lost task is known exactly: a task still
``RUNNING`` a lease after it started (a drain, or a one-row delivery of an earlier version
whose row was never claimed); such task rows are marked failed, so they don't stay RUNNING
forever. With any backend, a ``queued`` row overdue by more than ``REQUEUE_AFTER_SECONDS``
whose task was enqueued as long ago is presumed lost too. Drain slots pending for longer than a
lease are freed (their task was lost, see :mod:`.slots`). Whenever anything was found, or due
rows have waited longer than a lease, a drain is kicked (one more is harmless: the claim makes
it a no-op). A row that exhausted ``MAX_ATTEMPTS`` by dying mid-send every time (a poison
message) is failed instead.
"""

from __future__ import annotations

import datetime
import logging
import time

from django.apps import apps
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..conf import get_settings
from ..models import OutboxMessage
from . import signals, slots
from .conf import get_queue_settings
from .tasks import enqueue_drain, enqueue_watchdog

logger = logging.getLogger("tenantmail.queue")

Status = OutboxMessage.Status
BATCH = 1000

_last_run = -float("inf")
_watched_until: datetime.datetime | None = None


def recover_stale(*, now: datetime.datetime | None = None, limit: int = BATCH) -> int:
    """Re-enqueue (or fail) up to ``limit`` stale rows; returns how many were handled."""
    qs = get_queue_settings()
    now = now or timezone.now()
    lost = now - datetime.timedelta(seconds=qs.requeue_after_seconds)
    db = get_settings().tenant_db_alias
    stale = Q(status=Status.SENDING, lease_expires_at__lt=now) | Q(
        Q(enqueued_at__lt=lost) | Q(enqueued_at__isnull=True),
        status=Status.QUEUED,
        next_attempt_at__lt=lost,
    )
    a_lease_ago = now - datetime.timedelta(seconds=qs.lease_seconds)
    orphans, dead_drains = _orphaned_by_dead_db_workers(a_lease_ago)
    freed = slots.reset_stuck(a_lease_ago)
    if orphans:
        stale |= Q(pk__in=orphans, status=Status.QUEUED)
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
            requeued.append(row.pk)
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
        # Due rows waiting for more than a lease: their drain was lost (a dead worker, a failed
        # enqueue) or is merely busy; one more drain is harmless, a missing one loses mail.
        waiting = (
            OutboxMessage.objects.using(db)
            .filter(status=Status.QUEUED, next_attempt_at__lt=a_lease_ago)
            .exists()
        )
        if requeued or dead_drains or freed or waiting:
            transaction.on_commit(_drain, using=db)
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


DELIVER_TASK = "tenantmail.queue.tasks.deliver_outbox"


DRAIN_TASK = "tenantmail.queue.tasks.drain_outbox"


def _orphaned_by_dead_db_workers(started_before: datetime.datetime) -> tuple[list[int], bool]:
    """Outbox ids whose django-tasks-db delivery task a dead worker left RUNNING, and whether
    a drain task was left RUNNING.

    Those task rows are marked FAILED (they would otherwise stay RUNNING forever); their
    messages are re-enqueued by the caller if still queued (the rows a dead drain had claimed
    come back when their lease expires). Other task backends: nothing.
    """
    from .tasks import task_backends

    qs = get_queue_settings()
    # Installed but not in INSTALLED_APPS (another task backend is used): importing its models
    # would raise RuntimeError, so ask the app registry first.
    if not apps.is_installed("django_tasks_db"):
        return [], False
    try:
        from django_tasks_db.backend import DatabaseBackend
        from django_tasks_db.compat import TaskResultStatus
        from django_tasks_db.models import DBTaskResult
    except ImportError:
        return [], False
    if not isinstance(task_backends[qs.task_backend], DatabaseBackend):
        return [], False
    dead = DBTaskResult.objects.filter(
        backend_name=qs.task_backend,
        task_path__in=(DELIVER_TASK, DRAIN_TASK),
        status=TaskResultStatus.RUNNING,
        started_at__lt=started_before,
    )[:BATCH]
    ids: list[int] = []
    task_ids = []
    drains = False
    for task_id, path, args_kwargs in dead.values_list("id", "task_path", "args_kwargs"):
        task_ids.append(task_id)
        if path == DRAIN_TASK:
            drains = True
            continue
        args = args_kwargs.get("args") or [None]
        if isinstance(args[0], int):
            ids.append(args[0])
    if task_ids:
        DBTaskResult.objects.filter(id__in=task_ids, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            exception_class_path="tenantmail.queue.recovery.WorkerLost",
            traceback="The worker running this task stopped; tenantmail re-enqueued the message.",
        )
    return ids, drains


def _drain() -> None:
    """A drain for what recovery found: a slot if one is free, else one more slotless drain
    (the pending ones may be the lost ones)."""
    if slots.kick() is None:
        enqueue_drain()


def maybe_recover() -> int:
    """Run :func:`recover_stale` at most every ``RECOVER_EVERY_SECONDS`` in this process."""
    global _last_run
    every = get_queue_settings().recover_every_seconds
    now = time.monotonic()
    if now - _last_run < every:
        return 0
    _last_run = now
    return recover_stale()


def watch(lease_expires_at: datetime.datetime) -> None:
    """Make sure a recovery task runs after this lease expires, even if this process dies.

    An idle worker runs none of our code, so a row left ``sending`` by a killed worker would
    wait for cron (``tenantmail_recover``). Instead, the claiming worker enqueues a delayed
    ``recover_outbox`` task *before* it sends: another worker runs it after the lease. One
    watchdog covers every lease that ends within half a lease of it, so steady traffic costs
    one extra task per half lease per process, not one per message.
    """
    global _watched_until
    if _watched_until is not None and lease_expires_at <= _watched_until:
        return
    margin = datetime.timedelta(seconds=get_queue_settings().lease_seconds / 2)
    run_after = lease_expires_at + margin
    try:
        enqueue_watchdog(run_after)
    except Exception:  # the send matters more; cron / other workers still recover
        logger.exception("tenantmail: could not enqueue the outbox recovery watchdog")
        return
    _watched_until = run_after
