"""Real ``db_worker`` processes (django-tasks-db) against the test database and the fake ESP.

Bounded: a handful of messages per test, 2-second leases, sub-second backoffs (``FAST_QUEUE``).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connection
from django_tasks_db.models import DBTaskResult

from tenantmail.models import OutboxMessage
from tenantmail.queue import QueuedBackend
from tenantmail.queue.conf import get_queue_settings
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import (
    ACME_KEY,
    GLOBEX_TOKEN,
    HOOLI_PASSWORD,
    PLATFORM_KEY,
    acme_options,
)
from tests.queue.conftest import (
    FAST_QUEUE,
    Workers,
    _delete_queue_rows,
    committed,
    wait_until,
    worker_env,
)
from tests.tenants_app.models import Client

Status = OutboxMessage.Status
SECRETS = (ACME_KEY, GLOBEX_TOKEN, HOOLI_PASSWORD, PLATFORM_KEY)


def _queue(tenant: str, subjects: list[str]) -> list[int]:
    def run() -> list[int]:
        messages = [EmailMessage(s, "body", None, [f"{s}@example.com"]) for s in subjects]
        return [row.pk for row in enqueue_all(messages, tenant)]

    return committed(run)


def enqueue_all(messages: list[EmailMessage], tenant: str) -> list[OutboxMessage]:
    from tenantmail.queue.enqueueing import enqueue_many

    return enqueue_many(messages, tenant=tenant)


def _statuses() -> Counter[str]:
    return Counter(OutboxMessage.objects.values_list("status", flat=True))


def _all_sent(n: int) -> bool:
    return _statuses() == Counter({Status.SENT: n})


def _scan_for_secrets() -> list[str]:
    """Every column of the outbox and the task table, as text, searched for credentials."""
    found = []
    with connection.cursor() as cursor:
        for table in (OutboxMessage._meta.db_table, DBTaskResult._meta.db_table):
            cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t")  # noqa: S608
            for (text,) in cursor.fetchall():
                found += [f"{table}: …{s[-4:]}" for s in SECRETS if s in text]
    return found


def test_workers_send_each_tenants_mail_with_the_key_valid_at_send_time(
    workers: Workers, fake_esp: FakeESP, fake_smtp: FakeSMTP
) -> None:
    rotated = "key-acme-rotated-at-send-time-0"
    _queue("acme", ["acme1"])
    _queue("globex", ["globex1"])
    _queue("hooli", ["hooli1"])
    _queue("initech", ["initech1"])  # no config of its own: the platform account, said so
    _queue("public", ["platform1"])

    def rotate(key: str) -> None:
        tenant = Client.objects.get(schema_name="acme")
        tenant.mail_options = acme_options(fake_esp, api_key=key)
        tenant.save()

    committed(rotate, rotated)  # after enqueue, before any worker runs
    try:
        workers.start()
        wait_until(lambda: _all_sent(5), 30, f"5 sent\n{workers.logs()}")
    finally:
        committed(rotate, ACME_KEY)
    by_subject = {m.subject: m for m in fake_esp.messages}
    assert by_subject["acme1"].credential == rotated
    assert by_subject["acme1"].metadata == {"tenant": "acme"}
    assert by_subject["globex1"].credential == GLOBEX_TOKEN
    assert by_subject["initech1"].credential == PLATFORM_KEY
    assert by_subject["platform1"].credential == PLATFORM_KEY
    assert [m.subject for m in fake_smtp.messages] == ["hooli1"]
    assert fake_smtp.messages[0].credential == f"hooli:{HOOLI_PASSWORD}"
    assert _scan_for_secrets() == []


def test_workers_retry_429_and_500_then_send(workers: Workers, fake_esp: FakeESP) -> None:
    (pk,) = _queue("acme", ["retried"])
    fake_esp.fail_next(429)
    fake_esp.fail_next(500)
    workers.start()
    wait_until(lambda: _all_sent(1), 30, f"the retried message\n{workers.logs()}")
    row = OutboxMessage.objects.get(pk=pk)
    assert row.attempts == 3
    assert [status for _, status in fake_esp.rejected] == [429, 500]
    assert [m.subject for m in fake_esp.messages] == ["retried"]
    assert _scan_for_secrets() == []


def test_a_permanent_failure_stores_a_masked_error_and_no_secret(
    workers: Workers, fake_esp: FakeESP
) -> None:
    (pk,) = _queue("acme", ["refused"])
    fake_esp.fail_next(400, body=f'{{"message": "key {ACME_KEY} is not allowed"}}')
    workers.start()
    wait_until(lambda: _statuses() == Counter({Status.FAILED: 1}), 30, f"failure\n{workers.logs()}")
    # acme's own api_url: its answer is withheld (only the status is kept), never stored.
    stored = OutboxMessage.objects.get(pk=pk).last_error
    assert "400" in stored
    assert "is not allowed" not in stored
    assert _scan_for_secrets() == []


def test_sigkill_mid_batch_loses_nothing(workers: Workers, fake_esp: FakeESP) -> None:
    subjects = [f"m{i:02d}" for i in range(24)]
    _queue("acme", subjects)
    fake_esp.delay = 0.1  # every send takes a while, so the kill lands mid-send
    victim = workers.start()
    wait_until(lambda: len(fake_esp.messages) >= 4, 30, f"a few sends\n{workers.logs()}")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    stuck = OutboxMessage.objects.filter(status=Status.SENDING).count()
    fake_esp.delay = 0.0
    workers.start()
    workers.start()
    wait_until(lambda: _all_sent(len(subjects)), 45, f"all sent\n{workers.logs()}")
    received = Counter(m.subject for m in fake_esp.messages)
    assert set(received) == set(subjects)  # 0 lost
    duplicates = sum(n - 1 for n in received.values())
    # The kill left the whole claimed batch `sending` (they came back by lease, 0 lost), but only
    # what was in flight could go out twice: a send on each THREADS thread, plus the finished
    # sends whose outcome write was under way (outcomes are written as sends finish).
    threads = get_queue_settings().threads
    assert duplicates <= 2 * threads, (duplicates, stuck)
    assert threads < stuck <= len(subjects)  # more than the in-flight sends were claimed


def test_two_workers_never_send_the_same_message_twice(workers: Workers, fake_esp: FakeESP) -> None:
    subjects = [f"w{i:02d}" for i in range(40)]
    _queue("acme", subjects[:20])
    _queue("globex", subjects[20:])
    workers.start()
    workers.start()
    wait_until(lambda: _all_sent(len(subjects)), 45, f"all sent\n{workers.logs()}")
    received = Counter(m.subject for m in fake_esp.messages)
    assert received == Counter(subjects)


def test_a_small_tenant_is_served_ahead_of_another_tenants_burst(
    workers: Workers, fake_esp: FakeESP, queue_settings: dict[str, Any], settings: Any
) -> None:
    # Priorities are decided at enqueue, in this process.
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {**queue_settings, "FAIR_SHARE": 10}}
    committed(
        lambda: QueuedBackend(tenant="acme").send_messages(
            [EmailMessage(f"burst{i}", "b", None, ["t@example.com"]) for i in range(300)]
        )
    )
    small = _queue("globex", [f"small{i}" for i in range(10)])
    started = time.monotonic()
    workers.start()
    wait_until(
        lambda: OutboxMessage.objects.filter(pk__in=small, status=Status.SENT).count() == 10,
        60,
        f"the small tenant's 10\n{workers.logs()}",
    )
    waited = time.monotonic() - started
    # Counted in the order the fake ESP received them (the worker keeps sending the burst while
    # this test polls): only the burst's first FAIR_SHARE (10) rank alongside the small tenant's
    # 10, plus the sends in flight on the drain's threads; FIFO would have sent all 300 first.
    subjects = [m.subject for m in fake_esp.messages]
    last_small = max(i for i, s in enumerate(subjects) if s.startswith("small"))
    burst_sent = sum(1 for s in subjects[:last_small] if s.startswith("burst"))
    assert burst_sent <= 10 + get_queue_settings().threads, burst_sent
    assert waited < 30


@pytest.mark.slow
def test_fairness_with_a_10000_message_burst(workers: Workers, fake_esp: FakeESP) -> None:
    committed(
        lambda: QueuedBackend(tenant="acme").send_messages(
            [EmailMessage(f"burst{i}", "b", None, ["t@example.com"]) for i in range(10_000)]
        )
    )
    small = _queue("globex", [f"small{i}" for i in range(10)])
    started = time.monotonic()
    workers.start()
    wait_until(
        lambda: OutboxMessage.objects.filter(pk__in=small, status=Status.SENT).count() == 10,
        60,
        f"the small tenant's 10\n{workers.logs()}",
    )
    assert time.monotonic() - started < 20


def test_a_tenants_rate_limit_holds_across_two_workers(
    fake_esp: FakeESP, tmp_path: Any, settings: Any, tenants: Any, queue_settings: Any
) -> None:
    limited = {**queue_settings, "TENANT_RATE_LIMITS": {"acme": 2}}
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": limited}
    committed(_delete_queue_rows)
    pool = Workers(worker_env(fake_esp, limited), tmp_path)
    try:
        subjects = [f"r{i:02d}" for i in range(10)]
        _queue("acme", subjects)
        _queue("globex", ["unlimited"])
        pool.start()
        pool.start()
        wait_until(lambda: _all_sent(11), 45, f"all sent\n{pool.logs()}")
    finally:
        pool.stop()
        committed(_delete_queue_rows)
    times = sorted(m.received_at for m in fake_esp.messages if m.subject.startswith("r"))
    assert len(times) == 10
    # GCRA at 2/s with a one-second burst: at most 2 + 2*w messages in any window of w seconds.
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t - start <= 1.0)
        assert in_window <= 4 + 1, (in_window, times)  # +1: a message on the boundary
    assert times[-1] - times[0] >= (10 - 2) / 2 - 0.3


def test_a_rate_limit_in_redis_holds_across_two_workers(
    fake_esp: FakeESP, tmp_path: Any, settings: Any, tenants: Any, redis_url: str
) -> None:
    import redis

    limited = {
        **FAST_QUEUE,
        # Nothing is killed here: a lease long enough that a worker's first send (imports, a
        # busy machine) never outlives it and gets taken over, which would send it twice.
        "LEASE_SECONDS": 15,
        "TENANT_RATE_LIMITS": {"acme": 2},
        "RATE_LIMIT_STORAGE": redis_url,
    }
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": limited}
    committed(_delete_queue_rows)
    pool = Workers(worker_env(fake_esp, limited), tmp_path)
    try:
        subjects = [f"r{i:02d}" for i in range(8)]
        _queue("acme", subjects)
        _queue("globex", ["unlimited"])
        pool.start()
        pool.start()
        wait_until(lambda: _all_sent(9), 45, f"all sent\n{pool.logs()}")
    finally:
        pool.stop()
        committed(_delete_queue_rows)
    times = sorted(m.received_at for m in fake_esp.messages if m.subject.startswith("r"))
    assert len(times) == 8, Counter(m.subject for m in fake_esp.messages)
    # `limits`' moving window at 2 per second: at most 2 sends in any one-second window.
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t - start < 1.0)
        assert in_window <= 2 + 1, (in_window, times)  # +1: the limiter hit vs the arrival
    assert times[-1] - times[0] >= (8 - 2) / 2 - 0.3
    # The two workers shared the window through this Redis (not a per-process memory store);
    # its keys expire with the window, so count what the server did instead.
    server = redis.Redis.from_url(redis_url)
    assert server.info("stats")["total_connections_received"] >= 3  # us + 2 workers
    scripts = server.info("commandstats")
    assert sum(scripts.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha")) >= 8
