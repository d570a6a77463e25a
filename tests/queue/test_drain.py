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
