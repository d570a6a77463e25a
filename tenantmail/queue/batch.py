"""The drain: claim due outbox rows in batches, send each batch on a few threads, write outcomes.

One task drains many messages (see :mod:`.slots` for when one is enqueued), instead of one task
per message: per message that saved the task framework's fetch/lock/update/commit of its own
row. Per batch:

1. **Claim** up to ``BATCH_SIZE`` due rows in one statement (``UPDATE … FROM (SELECT … ORDER BY
   priority DESC, id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING``): concurrent drains never get
   the same row, the fairness levels decide the order (a small tenant's level-0 mail goes
   before a burst's deeper levels), and the batch's rows get one claim token and a lease. A
   drain killed mid-batch leaves its rows ``sending``; they come back when the lease expires.
2. **Rate limits** are reserved per row (in this thread); once a tenant is refused, the rest of
   its rows in the batch are deferred without asking again.
3. **Send** on ``THREADS`` threads, each row inside its own tenant's context through the real
   ``TenantBackend`` (the pool hands each thread its own inner connection).
4. **Outcomes**, written while the threads keep sending: whatever sends finished since the last
   write, the sent ones in one ``UPDATE … FROM (VALUES …)`` guarded by the claim token, failures
   one by one (retry or fail, as in :mod:`.worker`). Recording as sends finish (not once per
   batch) keeps what a kill can duplicate to the sends in flight. Rows put back for later get
   one delayed drain task per distinct second.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from django.core.mail import EmailMessage
from django.db import connections
from django.utils import timezone

from ..conf import get_settings
from ..models import OutboxMessage
from ..threads import TenantThreadPoolExecutor
from . import ratelimit, recovery, signals, slots
from .conf import get_queue_settings
from .worker import _defer, _deliver_row, _esp_message_id, _failed
from .worker import drain_at as _drain_at

logger = logging.getLogger("tenantmail.queue")

Status = OutboxMessage.Status

_CLAIM_SQL = """
UPDATE {table} AS o
SET status = %s, attempts = o.attempts + 1, claim_token = %s, lease_expires_at = %s
FROM (
    SELECT id FROM {table}
    WHERE status = %s AND next_attempt_at <= %s
    ORDER BY priority DESC, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
) AS due
WHERE o.id = due.id
RETURNING o.*
"""
_SENT_SQL = """
UPDATE {table} AS o
SET status = %s, sent_at = %s, esp_message_id = v.esp, last_error = '', claim_token = '',
    lease_expires_at = NULL
FROM (VALUES {values}) AS v(id, token, esp)
WHERE o.id = v.id AND o.claim_token = v.token
RETURNING o.id
"""
_SENT_ROW = "(%s::bigint, %s::varchar, %s::varchar)"

#: (row, the message as sent, None) or (row, None, the error).
Outcome = tuple[OutboxMessage, EmailMessage | None, Exception | None]


def claim_batch(limit: int, *, now: datetime.datetime | None = None) -> list[OutboxMessage]:
    """Take up to ``limit`` due rows for this worker, in fair order (see the module docstring)."""
    now = now or timezone.now()
    db = get_settings().tenant_db_alias
    lease = datetime.timedelta(seconds=get_queue_settings().lease_seconds)
    sql = _CLAIM_SQL.format(table=connections[db].ops.quote_name(OutboxMessage._meta.db_table))
    params = [Status.SENDING.value, uuid.uuid4().hex, now + lease, Status.QUEUED.value, now, limit]
    rows = list(OutboxMessage.objects.db_manager(db).raw(sql, params))
    # RETURNING has no order of its own: send in the claim's (fair) order.
    rows.sort(key=lambda row: (-row.priority, row.pk))
    return rows


def _send_one(row: OutboxMessage) -> Outcome:
    try:
        message = _deliver_row(row)
    except Exception as exc:
        return row, None, exc
    return row, message, None


class Sender:
    """``THREADS`` threads sending for the length of one drain."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.pool = TenantThreadPoolExecutor(max_workers=threads, thread_name_prefix="tenantmail")

    def send(self, rows: list[OutboxMessage]) -> Iterator[list[Outcome]]:
        """Send ``rows``; yields the outcomes as they finish, as many as are ready each time.

        The caller records each group before asking for the next, so what a kill can send
        twice is what was in flight (at most ``THREADS`` sends plus one group not yet
        recorded), not the whole batch.
        """
        pending: set[Future[Outcome]] = {self.pool.submit(_send_one, row) for row in rows}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [future.result() for future in done]

    def close(self) -> None:
        """Close the Django connections the threads opened (they are per thread), then stop.

        One job per thread: the barrier holds each job until all have started, so no thread
        runs two of them and every thread closes its own connections.
        """
        barrier = threading.Barrier(self.threads)

        def close_connections() -> None:
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:  # pragma: no cover - a thread stuck sending
                pass
            finally:
                connections.close_all()

        wait([self.pool.submit(close_connections) for _ in range(self.threads)])
        self.pool.shutdown(wait=True)


def _write_sent(sent: list[tuple[OutboxMessage, EmailMessage]]) -> None:
    if not sent:
        return
    db = get_settings().tenant_db_alias
    connection = connections[db]
    now = timezone.now()
    params: list[Any] = [Status.SENT.value, now]
    for row, message in sent:
        params += [row.pk, row.claim_token, _esp_message_id(message)]
    sql = _SENT_SQL.format(
        table=connection.ops.quote_name(OutboxMessage._meta.db_table),
        values=", ".join([_SENT_ROW] * len(sent)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        written = {pk for (pk,) in cursor.fetchall()}
    for row, message in sent:
        row.status, row.sent_at, row.last_error = Status.SENT, now, ""
        row.esp_message_id = _esp_message_id(message)
        row.claim_token, row.lease_expires_at = "", None
        if row.pk not in written:
            logger.warning(
                "tenantmail: outbox message %s outlived its lease (LEASE_SECONDS) and was taken "
                "over by another worker; it may be sent twice (same Message-ID %s)",
                row.pk,
                row.message_id,
            )
        signals.message_sent.send(
            sender=OutboxMessage, outbox=row, tenant=row.tenant_schema or None
        )


def process(rows: list[OutboxMessage], sender: Sender) -> set[datetime.datetime]:
    """Send one claimed batch and record every outcome; returns when to drain again."""
    later: set[datetime.datetime] = set()

    def drain_later(run_after: datetime.datetime) -> None:
        # Rounded up to the next whole second: one delayed drain per second of retries.
        later.add(run_after.replace(microsecond=0) + datetime.timedelta(seconds=1))

    to_send: list[OutboxMessage] = []
    refused: dict[str, float] = {}
    for row in rows:
        schema = row.tenant_schema
        if schema in refused:
            _defer(row, refused[schema], drain_later)
            continue
        try:
            wait_for = ratelimit.reserve(schema)
        except Exception as exc:  # the limiter's own error: on the row, retried
            _failed(row, exc, drain_later)
            continue
        if wait_for > 0:
            refused[schema] = wait_for
            _defer(row, wait_for, drain_later)
            continue
        to_send.append(row)
    for outcomes in sender.send(to_send):
        _write_sent([(row, message) for row, message, _ in outcomes if message is not None])
        for row, _, error in outcomes:
            if error is not None:
                _failed(row, error, drain_later)
    return later


def drain(slot: int | None = None) -> int:
    """Run by ``drain_outbox``: send due rows until none is left; returns how many were claimed."""
    qs = get_queue_settings()
    lease = datetime.timedelta(seconds=qs.lease_seconds)
    # Before the first claim: should this process die from here on, a recovery task runs
    # after the lease on another worker (see recovery.watch).
    recovery.watch(timezone.now() + lease)
    recovery.maybe_recover()
    if slot is not None:
        # Committed before the first claim: what is enqueued from now on kicks a new drain.
        slots.release(slot)
    claimed = 0
    later: set[datetime.datetime] = set()
    sender = Sender(qs.threads)
    try:
        while rows := claim_batch(qs.batch_size):
            recovery.watch(timezone.now() + lease)
            claimed += len(rows)
            later |= process(rows, sender)
    finally:
        sender.close()
        for run_after in sorted(later):
            _drain_at(run_after)
    return claimed
