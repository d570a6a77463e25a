"""Drain slots: at most ``CONCURRENCY`` drain tasks pending per queue, however much mail waits.

A drain task (:func:`.batch.drain`) sends every due outbox row, in batches, until none is left,
so one task per message is not needed: an enqueue only has to make sure *some* drain will run
after its rows are committed. Each queue has ``CONCURRENCY`` :class:`~tenantmail.models.DrainSlot`
rows; a slot is ``pending`` from the moment a drain task is enqueued for it until that task
starts and frees it.

Why no message is lost (READ COMMITTED, the slot flag being the only shared state):

1. ``enqueue`` commits its outbox rows *before* :func:`kick` looks at the slots (kick runs on
   commit).
2. :func:`kick` flips one free slot to pending and enqueues a drain for it, or finds every slot
   pending (or being flipped/freed by someone else: ``SKIP LOCKED``).
3. A drain frees its slot, *committed*, before its first claim.

If kick flipped a slot, its drain runs after step 1 and sees the rows. If it found a slot
pending (or locked), that slot's drain had not yet committed its step 3 when kick read it, so the
drain's first claim starts after that read, hence after the rows were committed, and sees them.
Either way a drain that starts later will see the rows; a drain already running when they were
committed freed its slot earlier, so kick finds that slot free and enqueues a new one.

The flip and the task's enqueue share one transaction, so with django-tasks-db on this database
a slot is never left pending without its task. With another task backend a crash between the two
can leave one stuck: :func:`reset_stuck` (run by recovery) frees slots pending longer than a
lease, and recovery enqueues a drain whenever due rows have waited that long.
"""

from __future__ import annotations

import datetime

from django.db import connections, transaction

from ..conf import get_settings
from ..models import DrainSlot
from .conf import get_queue_settings
from .tasks import enqueue_drain

_ENSURE_SQL = """
INSERT INTO {table} (queue_name, slot, pending)
SELECT %s, g, false FROM generate_series(0, %s - 1) AS g
ON CONFLICT (queue_name, slot) DO NOTHING
"""
# One round trip: flip the first free slot, and count the slots, so that missing slot rows
# (a new queue name, a higher CONCURRENCY, rows deleted) are created rather than read as "all
# pending".
_FLIP_SQL = """
WITH flipped AS (
    UPDATE {table} SET pending = true, pending_since = now()
    WHERE id = (
        SELECT id FROM {table}
        WHERE queue_name = %s AND slot < %s AND NOT pending
        ORDER BY slot LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING slot
)
SELECT (SELECT slot FROM flipped),
       (SELECT count(*) FROM {table} WHERE queue_name = %s AND slot < %s)
"""
_RELEASE_SQL = (
    "UPDATE {table} SET pending = false, pending_since = NULL WHERE queue_name = %s AND slot = %s"
)


def _table(db: str) -> str:
    return connections[db].ops.quote_name(DrainSlot._meta.db_table)


def kick() -> int | None:
    """Make sure a drain will run after what was just committed.

    Returns the slot flipped (a drain task was enqueued for it), or ``None`` when every slot
    already has a drain pending (which will see the committed rows, see the module docstring).
    """
    qs = get_queue_settings()
    db = get_settings().tenant_db_alias
    table = _table(db)
    params: list[str | int] = [qs.queue_name, qs.concurrency] * 2
    with transaction.atomic(using=db):
        with connections[db].cursor() as cursor:
            cursor.execute(_FLIP_SQL.format(table=table), params)
            slot, count = cursor.fetchone()
            if slot is None and count < qs.concurrency:
                cursor.execute(_ENSURE_SQL.format(table=table), [qs.queue_name, qs.concurrency])
                cursor.execute(_FLIP_SQL.format(table=table), params)
                slot, count = cursor.fetchone()
        if slot is None:
            return None
        # Same transaction: should the enqueue fail, the slot stays free (rolled back).
        enqueue_drain(slot=int(slot))
    return int(slot)


def release(slot: int) -> None:
    """Free ``slot`` (autocommit, so it is committed before the drain's first claim)."""
    db = get_settings().tenant_db_alias
    with connections[db].cursor() as cursor:
        cursor.execute(
            _RELEASE_SQL.format(table=_table(db)), [get_queue_settings().queue_name, slot]
        )


def reset_stuck(pending_before: datetime.datetime) -> int:
    """Free slots pending since before ``pending_before`` (their task was lost); returns how many.

    Freeing a slot whose task is merely slow to start costs at most one extra drain task later.
    """
    db = get_settings().tenant_db_alias
    return (
        DrainSlot.objects.using(db)
        .filter(
            queue_name=get_queue_settings().queue_name,
            pending=True,
            pending_since__lt=pending_before,
        )
        .update(pending=False, pending_since=None)
    )
