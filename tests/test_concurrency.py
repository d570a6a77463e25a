"""Threads and asyncio tasks sending for different tenants never cross credentials.

Worker threads only read the session tenants (committed before the per-test transaction), and
close their own database connection when done so the test database can be torn down.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from anymail.signals import pre_send as anymail_pre_send
from asgiref.sync import sync_to_async
from django.db import connection
from django_tenants.utils import schema_context, tenant_context

import tenantmail.pool as pool_module
from tenantmail import mailer, sending_as
from tenantmail.backends import TenantBackend
from tenantmail.pool import PoolStats
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants
from tests.test_pool import expected, message, stats_since_now, wait_until

THREADS = 8
SENDS_PER_THREAD = 50
#: schema -> (ESP, credential, from_email) every one of its messages must arrive with.
EXPECTED = {
    "acme": ("mailgun", ACME_KEY, "hello@acme.example"),
    "globex": ("postmark", GLOBEX_TOKEN, "platform@saas.example"),
    "initech": ("mailgun", PLATFORM_KEY, "platform@saas.example"),
}
HOW = ("tenant_context", "schema_context", "sending_as", "tenant=")


@pytest.fixture(autouse=True)
def _settled(fake_esp: FakeESP) -> None:
    """Start once the fake ESP has noticed the previous test's connections were closed."""
    wait_until(lambda: fake_esp.open_connections == 0)


@pytest.fixture
def pool_delta() -> Callable[[], PoolStats]:
    return stats_since_now()


@contextmanager
def own_db_connection() -> Iterator[None]:
    """For worker threads: close the thread's database connection when done."""
    try:
        yield
    finally:
        connection.close()


def send(tenants: Tenants, shared: TenantBackend, schema: str, how: str, subject: str) -> int:
    """Send one message as ``schema``, naming the tenant the way ``how`` says."""
    instance = getattr(tenants, schema)
    if how == "tenant_context":
        with tenant_context(instance):
            return shared.send_messages([message(subject)])
    if how == "schema_context":
        with schema_context(schema):
            return shared.send_messages([message(subject)])
    if how == "sending_as":
        with sending_as(schema):
            return shared.send_messages([message(subject)])
    return mailer(tenant=instance).send_messages([message(subject)])


class PoolWatcher:
    """Samples the pool's stats from its own thread; keeps the peaks."""

    def __init__(self) -> None:
        self.peak_total = 0  # idle + in use
        self.peak_idle = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = pool_module.stats()
            self.peak_total = max(self.peak_total, s.idle + s.in_use)
            self.peak_idle = max(self.peak_idle, s.idle)
            self.samples += 1
            self._stop.wait(0.0005)

    def __enter__(self) -> PoolWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.parametrize(
    "bound",
    [
        # One slot per thread: switching tenant usually means evicting an idle connection.
        THREADS,
        # Room for every thread to keep one connection per tenant: nothing is ever evicted.
        THREADS * len(EXPECTED),
    ],
    ids=["tight", "roomy"],
)
def test_threads_sending_for_random_tenants_never_cross_credentials(
    tenants: Tenants,
    fake_esp: FakeESP,
    settings: Any,
    pool_delta: Callable[[], PoolStats],
    bound: int,
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MAX_CONNECTIONS": bound}
    shared = mailer()  # one backend instance for every thread: the tenant is found per send
    start = threading.Barrier(THREADS, timeout=10)

    def worker(n: int) -> Counter[str]:
        rng = random.Random(n)
        sent: Counter[str] = Counter()
        with own_db_connection():
            start.wait()
            for i in range(SENDS_PER_THREAD):
                schema, how = rng.choice(sorted(EXPECTED)), rng.choice(HOW)
                assert send(tenants, shared, schema, how, f"{schema}|{n}|{i}|{how}") == 1
                sent[schema] += 1
        return sent

    with PoolWatcher() as watcher, ThreadPoolExecutor(THREADS) as executor:
        per_thread = list(executor.map(worker, range(THREADS)))

    total = THREADS * SENDS_PER_THREAD
    received = fake_esp.wait_for(total, timeout=10)
    assert len(received) == total
    assert len({m.subject for m in received}) == total
    for m in received:
        schema = m.subject.split("|")[0]
        assert (m.esp, m.credential, m.from_email) == EXPECTED[schema], m
        assert m.metadata == {"tenant": schema}, m
    assert Counter(m.subject.split("|")[0] for m in received) == sum(per_thread, Counter())
    assert {m.subject.split("|")[3] for m in received} == set(HOW)  # every way was exercised

    stats = pool_delta()
    assert stats.in_use == 0
    assert stats.hits + stats.misses == total
    assert stats.opened == stats.misses
    assert stats.overflow == 0  # at least one slot per thread: nobody ever had to go over
    assert stats.closed == stats.evicted  # nothing failed, nothing expired
    assert stats.opened - stats.closed == stats.idle <= bound  # nothing leaked
    assert watcher.samples > 0
    assert watcher.peak_total <= bound
    if bound > THREADS:
        # A connection is only opened while every one for its tenant is busy: <= 8 per tenant.
        assert stats.evicted == 0
        assert stats.misses <= bound
    # One HTTP connection per pooled backend: keep-alive held under concurrency too.
    assert fake_esp.connections_opened == stats.opened
    wait_until(lambda: fake_esp.open_connections == stats.idle)


def test_a_burst_beyond_the_bound_overflows_then_sheds_back(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, pool_delta: Callable[[], PoolStats]
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MAX_CONNECTIONS": 2}
    burst = 4
    # Anymail's own pre_send signal fires mid-send, with the connection checked out: holding
    # every sender there makes all of them busy at once, deterministically.
    all_sending = threading.Barrier(burst, timeout=10)

    def hold(**kwargs: Any) -> None:
        all_sending.wait()

    def worker(n: int) -> int:
        with own_db_connection():
            return mailer(tenant=tenants.acme).send_messages([message(f"burst {n}")])

    anymail_pre_send.connect(hold, weak=False)
    try:
        with PoolWatcher() as watcher, ThreadPoolExecutor(burst) as executor:
            assert list(executor.map(worker, range(burst))) == [1] * burst
    finally:
        anymail_pre_send.disconnect(hold)

    assert {m.credential for m in fake_esp.wait_for(burst)} == {ACME_KEY}
    assert fake_esp.connections_opened == burst
    assert pool_delta() == expected(misses=4, opened=4, overflow=2, closed=2, evicted=2, idle=2)
    assert watcher.peak_idle <= 2  # idle connections never exceed the bound, even in a burst
    wait_until(lambda: fake_esp.open_connections == 2)


def test_sending_as_is_local_to_each_thread(tenants: Tenants, fake_esp: FakeESP) -> None:
    shared = mailer()
    both_inside = threading.Barrier(2, timeout=10)

    def worker(schema: str) -> str | None:
        with own_db_connection(), sending_as(schema):
            both_inside.wait()  # each thread is inside its own sending_as now
            seen = shared.resolve().tenant
            assert shared.send_messages([message(f"{schema} thread")]) == 1
            both_inside.wait()  # neither leaves before the other has sent
            return seen

    with ThreadPoolExecutor(2) as executor:
        assert list(executor.map(worker, ["acme", "globex"])) == ["acme", "globex"]

    assert shared.resolve().tenant is None  # this thread never entered sending_as
    received = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert received == {"acme thread": ACME_KEY, "globex thread": GLOBEX_TOKEN}


@pytest.mark.parametrize("runner", ["asyncio.to_thread", "sync_to_async"])
def test_sending_as_is_local_to_each_asyncio_task(
    tenants: Tenants, fake_esp: FakeESP, runner: str
) -> None:
    def send_one(subject: str) -> int:  # runs in a worker thread, with the task's context
        with own_db_connection():
            return mailer().send_messages([message(subject)])

    async def in_thread(subject: str) -> int:
        if runner == "asyncio.to_thread":
            return await asyncio.to_thread(send_one, subject)
        return await sync_to_async(send_one, thread_sensitive=False)(subject)

    async def task(schema: str, entered: asyncio.Event, other: asyncio.Event) -> list[int]:
        with sending_as(schema):
            entered.set()
            await other.wait()  # both tasks are inside their own sending_as now
            results = []
            for i in range(3):
                results.append(await in_thread(f"{schema} task {i}"))
                await asyncio.sleep(0)  # let the other task run in between
        return results

    async def main() -> list[list[int]]:
        acme_in, globex_in = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(
            task("acme", acme_in, globex_in), task("globex", globex_in, acme_in)
        )

    assert asyncio.run(main()) == [[1, 1, 1], [1, 1, 1]]
    received = {m.subject: m.credential for m in fake_esp.wait_for(6)}
    assert received == {
        **{f"acme task {i}": ACME_KEY for i in range(3)},
        **{f"globex task {i}": GLOBEX_TOKEN for i in range(3)},
    }
    assert mailer().resolve().tenant is None  # nothing leaked into the caller's context
