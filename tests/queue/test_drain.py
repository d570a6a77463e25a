"""Drains: coalesced tasks, the enqueue/drain race, batch claims, threads, bulk outcomes."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.utils import timezone

from tenantmail.models import DrainSlot, OutboxMessage
from tenantmail.queue.batch import claim_batch, drain
from tenantmail.queue.enqueueing import enqueue_many
from tenantmail.queue.slots import kick
from tenantmail.testing import FakeESP
from tests.queue.conftest import (
    FAST_QUEUE,
    Workers,
    _delete_queue_rows,
    committed,
    deliveries,
    wait_until,
)

Status = OutboxMessage.Status


def _messages(prefix: str, n: int) -> list[EmailMessage]:
    return [EmailMessage(f"{prefix}{i:03d}", "b", None, ["t@example.com"]) for i in range(n)]


@pytest.fixture
def clean(tenants: Any) -> Any:
    committed(_delete_queue_rows)
    yield
    committed(_delete_queue_rows)


def test_n_enqueues_leave_at_most_concurrency_drain_tasks_pending(
    clean: Any, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "CONCURRENCY": 3}}

    def enqueue_each() -> None:
        for message in _messages("c", 40):  # 40 commits, 40 kicks
            enqueue_many([message], tenant="acme")

    committed(enqueue_each)
    assert OutboxMessage.objects.filter(status=Status.QUEUED).count() == 40
    tasks = list(deliveries().values_list("args_kwargs", flat=True))
    assert sorted(task["args"][0] for task in tasks) == [0, 1, 2]  # one per slot, no more
    assert DrainSlot.objects.filter(pending=True).count() == 3


def test_missing_slot_rows_are_created_not_read_as_pending(clean: Any, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "CONCURRENCY": 1}}
    assert committed(kick) == 0
    committed(lambda: DrainSlot.objects.all().delete())
    assert committed(kick) == 0  # re-created, and a drain enqueued
    assert committed(kick) is None  # now it is pending
    assert deliveries().count() == 2


def test_a_drain_frees_its_slot_and_sends_everything_due_on_its_threads(
    clean: Any, fake_esp: FakeESP, settings: Any
) -> None:
    queue = {**FAST_QUEUE, "CONCURRENCY": 1, "BATCH_SIZE": 7, "THREADS": 3}
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": queue}
    committed(enqueue_many, _messages("a", 20), tenant="acme")
    committed(enqueue_many, _messages("g", 5), tenant="globex")
    assert DrainSlot.objects.get().pending
    assert committed(drain, 0) == 25
    assert not DrainSlot.objects.get().pending
    assert Counter(OutboxMessage.objects.values_list("status", flat=True)) == {Status.SENT: 25}
    received = Counter(m.subject[0] for m in fake_esp.messages)
    assert received == {"a": 20, "g": 5}
    assert {m.credential for m in fake_esp.messages if m.subject[0] == "g"} != {
        m.credential for m in fake_esp.messages if m.subject[0] == "a"
    }
    assert all(row.esp_message_id for row in OutboxMessage.objects.all())
    # The sending threads are gone (each closed its own database connection before ending).
    assert not [t for t in threading.enumerate() if t.name.startswith("tenantmail")]


def test_two_concurrent_batch_claims_never_share_a_row(clean: Any, settings: Any) -> None:
    committed(enqueue_many, _messages("x", 120), tenant="acme")
    claimed: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def claimer(k: int) -> None:
        start.wait()
        while rows := claim_batch(9):
            claimed[k] += [row.pk for row in rows]

    threads = [threading.Thread(target=committed, args=(claimer, k)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not set(claimed[0]) & set(claimed[1])
    assert len(claimed[0]) + len(claimed[1]) == 120
    assert claimed[0]  # both got batches
    assert claimed[1]
    rows = OutboxMessage.objects.all()
    assert {row.status for row in rows} == {Status.SENDING}
    assert len({row.claim_token for row in rows}) > 2  # one token per batch


def test_a_batch_claims_in_fair_order_and_only_due_rows(clean: Any, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "FAIR_SHARE": 5}}
    committed(enqueue_many, _messages("burst", 30), tenant="acme")
    later = timezone.now() + timezone.timedelta(hours=1)
    committed(enqueue_many, _messages("later", 3), tenant="hooli", run_after=later)
    committed(enqueue_many, _messages("small", 3), tenant="globex")
    rows = committed(claim_batch, 10)
    assert [row.subject for row in rows] == [f"burst{i:03d}" for i in range(5)] + [
        "small000",
        "small001",
        "small002",
        "burst005",
        "burst006",
    ]


def _blocked_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        # The test's transaction would otherwise keep reading its first snapshot of the stats.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        return bool(cursor.fetchone()[0])


def test_an_enqueue_racing_a_drains_slot_reset_is_not_lost(
    clean: Any, fake_esp: FakeESP, settings: Any
) -> None:
    """The interleaving of the ordering argument in :mod:`tenantmail.queue.slots`.

    The drain's slot reset is held up (a lock on the slot row) while message B is committed and
    kicks: the kick skips the locked slot, so no new drain is enqueued. B is safe only because
    the drain resets its slot *before* its first claim; a drain that reset it after its last
    claim would return with B stranded, queued, and no drain pending.
    """
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "CONCURRENCY": 1}}
    committed(enqueue_many, _messages("A", 1), tenant="acme")
    holding, release = threading.Event(), threading.Event()

    def hold_the_slot() -> None:
        with transaction.atomic():
            DrainSlot.objects.select_for_update().get()
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=committed, args=(hold_the_slot,))
    holder.start()
    assert holding.wait(10)
    result: list[int] = []
    drainer = threading.Thread(target=lambda: result.append(committed(drain, 0)))
    drainer.start()
    wait_until(_blocked_on_a_lock, 10, "the drain to wait for the slot row")
    assert committed(enqueue_many, _messages("B", 1), tenant="acme")  # kicks: slot locked
    assert deliveries().count() == 1  # only the first drain's task: B's kick enqueued none
    release.set()
    holder.join(10)
    drainer.join(30)
    assert result == [2]
    assert sorted(m.subject for m in fake_esp.messages) == ["A000", "B000"]


def test_an_enqueue_while_a_drain_finishes_is_not_lost(
    workers: Workers, fake_esp: FakeESP, queue_settings: dict[str, Any]
) -> None:
    """One slot, one real worker, messages trickling in while drains start and end.

    Recovery is pushed out of reach (long lease, no self-recovery), so the slot protocol alone
    must deliver every one (the exact interleaving is pinned by the test above).
    """
    queue_settings.update(
        CONCURRENCY=1, LEASE_SECONDS=600, RECOVER_EVERY_SECONDS=3600, REQUEUE_AFTER_SECONDS=3600
    )
    workers.env["TENANTMAIL_QUEUE"] = __import__("json").dumps(queue_settings)
    fake_esp.delay = 0.005
    workers.start()
    rng = random.Random(9)

    def trickle() -> None:
        for message in _messages("r", 80):
            enqueue_many([message], tenant=rng.choice(["acme", "globex"]))
            time.sleep(rng.uniform(0, 0.03))

    committed(trickle)
    wait_until(
        lambda: OutboxMessage.objects.filter(status=Status.SENT).count() == 80,
        30,
        f"all 80 sent\n{workers.logs()}",
    )
    assert sorted(Counter(m.subject for m in fake_esp.messages).values()) == [1] * 80
    assert deliveries().count() < 80  # coalesced: fewer tasks than messages


def test_a_batch_defers_a_rate_limited_tenants_rows_once_and_sends_the_others(
    clean: Any, fake_esp: FakeESP, settings: Any
) -> None:
    queue = {**FAST_QUEUE, "RATE_LIMIT": 2, "TENANT_RATE_LIMITS": {"globex": None}}
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": queue}
    committed(enqueue_many, _messages("a", 6), tenant="acme")
    committed(enqueue_many, _messages("g", 2), tenant="globex")
    assert committed(drain) == 8
    rows = OutboxMessage.objects.all()
    assert Counter((r.tenant_schema, r.status, r.attempts) for r in rows) == {
        ("acme", Status.SENT, 1): 2,  # a burst of one second's worth
        ("acme", Status.QUEUED, 0): 4,  # put back, no attempt counted
        ("globex", Status.SENT, 1): 2,
    }
    waiting = [r.next_attempt_at for r in rows if r.status == Status.QUEUED]
    # One delayed drain (per second of deferrals), at or after every deferred row is due.
    delayed = [t.run_after for t in deliveries().filter(args_kwargs__args=[None])]
    assert 1 <= len(delayed) <= 2
    assert max(delayed) >= max(waiting)


def test_a_batch_retries_a_failed_send_and_records_the_rest_as_sent(
    clean: Any, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "THREADS": 1}}
    committed(enqueue_many, _messages("f", 3), tenant="acme")
    fake_esp.fail_next(500)
    assert committed(drain) == 3
    statuses = Counter(OutboxMessage.objects.values_list("status", flat=True))
    assert statuses == {Status.SENT: 2, Status.QUEUED: 1}
    retry = OutboxMessage.objects.get(status=Status.QUEUED)
    assert "500" in retry.last_error
    (delayed,) = deliveries().filter(args_kwargs__args=[None])  # beside the slot's drain
    assert delayed.run_after >= retry.next_attempt_at


def test_a_limiter_error_in_a_batch_is_recorded_and_retried(
    clean: Any, fake_esp: FakeESP, settings: Any
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    queue = {**FAST_QUEUE, "RATE_LIMIT": 5, "RATE_LIMIT_STORAGE": f"redis://127.0.0.1:{port}"}
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": queue}
    committed(enqueue_many, _messages("l", 2), tenant="acme")
    assert committed(drain) == 2
    rows = OutboxMessage.objects.all()
    assert {(r.status, r.attempts) for r in rows} == {(Status.QUEUED, 1)}
    assert all("ConnectionError" in r.last_error for r in rows)
    assert fake_esp.messages == []


def test_a_future_run_after_gets_a_delayed_drain_and_a_past_one_a_slot(
    clean: Any, settings: Any
) -> None:
    later = timezone.now() + timezone.timedelta(minutes=5)
    committed(enqueue_many, _messages("d", 2), tenant="acme", run_after=later)
    (delayed,) = deliveries()
    assert (delayed.args_kwargs["args"], delayed.run_after) == ([None], later)
    committed(enqueue_many, _messages("p", 1), tenant="acme", run_after=timezone.now())
    assert sorted(map(str, deliveries().values_list("args_kwargs__args", flat=True))) == [
        "[0]",
        "[None]",
    ]


def test_a_failed_kick_is_logged_and_the_row_stays_queued(
    clean: Any, settings: Any, caplog: Any
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "QUEUE": {**FAST_QUEUE, "TASK_BACKEND": "no-such-backend"},
    }
    (row,) = committed(enqueue_many, _messages("k", 1), tenant="acme")
    assert "could not enqueue the drain task" in caplog.text
    assert OutboxMessage.objects.get(pk=row.pk).status == Status.QUEUED
    assert not DrainSlot.objects.filter(pending=True).exists()  # the flip was rolled back


def test_recovery_closes_a_dead_drain_frees_its_slot_and_kicks_a_new_one(
    clean: Any, settings: Any
) -> None:
    from tenantmail.queue.recovery import recover_stale

    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "CONCURRENCY": 1}}
    committed(enqueue_many, _messages("z", 1), tenant="acme")
    # A db_worker took the drain (RUNNING) and died; its slot was pending since long ago.
    started = timezone.now() - timezone.timedelta(seconds=10)
    committed(lambda: deliveries().update(status="RUNNING", started_at=started))
    committed(lambda: DrainSlot.objects.update(pending_since=started))
    (dead,) = deliveries()
    assert committed(recover_stale) == 0  # no row to requeue, but a drain to kick
    dead.refresh_from_db()
    assert dead.status == "FAILED"
    fresh = deliveries().exclude(pk=dead.pk).get()
    assert fresh.args_kwargs["args"] == [0]
    assert DrainSlot.objects.get().pending


def test_recovery_adds_a_slotless_drain_when_every_slot_is_pending(
    clean: Any, settings: Any
) -> None:
    from tenantmail.queue.recovery import recover_stale

    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**FAST_QUEUE, "CONCURRENCY": 1}}
    committed(enqueue_many, _messages("w", 1), tenant="acme")
    past = timezone.now() - timezone.timedelta(seconds=10)
    committed(lambda: OutboxMessage.objects.update(next_attempt_at=past))  # > a lease
    assert committed(recover_stale) == 0
    assert sorted(map(str, deliveries().values_list("args_kwargs__args", flat=True))) == [
        "[0]",
        "[None]",
    ]
