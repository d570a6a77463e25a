"""The connection pool: used directly, and through TenantBackend against the real fake ESP.

Direct tests drive a private :class:`ConnectionPool` with a real (in-memory) Django backend that
remembers its ``open()``/``close()`` calls, so every count is exact. TenantBackend tests use the
process-wide pool and Anymail's real Mailgun/Postmark backends talking HTTP to ``fake_esp``; the
pool's counters are cumulative, so those tests compare against a snapshot taken at test start.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMessage
from django.core.mail.backends import locmem
from django_tenants.utils import tenant_context

import tenantmail.pool as pool_module
from tenantmail import mailer
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.pool import Connection, ConnectionPool, PoolStats, get_pool
from tenantmail.signals import post_send
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants, acme_options

COUNTERS = ("hits", "misses", "opened", "closed", "evicted", "expired", "discarded", "overflow")
NEW_ACME_KEY = "key-acme-rotated-44444444444"


# -- helpers -------------------------------------------------------------------------------------


def expected(**values: int) -> PoolStats:
    """A PoolStats with every field 0 except those given."""
    return PoolStats(**(dict.fromkeys((*COUNTERS, "idle", "in_use"), 0) | values))


class RecordingBackend(locmem.EmailBackend):
    """Django's real in-memory backend, remembering how often it was opened and closed."""

    def __init__(self, name: str = "", **kwargs: Any) -> None:
        super().__init__(alias=f"test:{name}", **kwargs)
        self.name = name
        self.open_calls = 0
        self.close_calls = 0

    def open(self) -> bool:
        self.open_calls += 1
        return True

    def close(self) -> None:
        self.close_calls += 1


class BrokenOpenBackend(RecordingBackend):
    """Like an SMTP backend whose login is refused: open() fails after allocating resources."""

    def open(self) -> bool:
        super().open()
        raise OSError("535 authentication failed")


class Factory:
    """Makes RecordingBackends and keeps every one it made."""

    def __init__(self, name: str, cls: type[RecordingBackend] = RecordingBackend) -> None:
        self.name = name
        self.cls = cls
        self.made: list[RecordingBackend] = []

    def __call__(self) -> RecordingBackend:
        backend = self.cls(f"{self.name}{len(self.made) + 1}")
        self.made.append(backend)
        return backend


def backend_of(conn: Connection) -> RecordingBackend:
    assert isinstance(conn.backend, RecordingBackend)
    return conn.backend


def make_pool(max_connections: int = 4, idle_timeout: float = 60.0) -> ConnectionPool:
    return ConnectionPool(max_connections=max_connections, idle_timeout=idle_timeout)


def run_in_fork(child: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``child`` in a forked process and return the JSON-able dict it returned."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a multi-threaded process (the fake servers' threads)
        # may deadlock; the child only touches objects no other thread uses.
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        try:
            payload = json.dumps({"ok": child()})
        except BaseException as exc:
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        with contextlib.suppress(BaseException):
            os.write(write_fd, payload.encode())
        os._exit(0)
    os.close(write_fd)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], 10.0)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the forked child did not report back within 10 s")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    assert "error" not in report, report["error"]
    result: dict[str, Any] = report["ok"]
    return result


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for something the server side does asynchronously (e.g. notice a closed socket)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)


def message(subject: str = "Hello") -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"])


@pytest.fixture(autouse=True)
def _settled(fake_esp: FakeESP) -> None:
    """Start once the fake ESP has noticed the previous test's connections were closed."""
    if fake_esp.open_connections:
        gc.collect()  # a dead error in a reference cycle can hold its HTTP response's socket
    wait_until(lambda: fake_esp.open_connections == 0)


def stats_since_now() -> Callable[[], PoolStats]:
    """Process-wide pool stats since this call (idle / in_use are absolute)."""
    before = pool_module.stats()

    def delta() -> PoolStats:
        now = pool_module.stats()
        return replace(
            now, **{name: getattr(now, name) - getattr(before, name) for name in COUNTERS}
        )

    return delta


@pytest.fixture
def pool_delta() -> Callable[[], PoolStats]:
    return stats_since_now()


# -- ConnectionPool, directly --------------------------------------------------------------------


def test_miss_opens_then_hit_reuses_the_same_backend() -> None:
    pool = make_pool()
    make = Factory("a")

    first = pool.checkout("a", make)
    assert pool.stats() == expected(misses=1, opened=1, in_use=1)
    assert backend_of(first).open_calls == 1
    pool.checkin(first)
    assert pool.stats() == expected(misses=1, opened=1, idle=1)

    again = pool.checkout("a", make)
    assert again is first
    assert len(make.made) == 1
    assert backend_of(again).open_calls == 1  # not reopened
    pool.checkin(again)
    assert pool.stats() == expected(hits=1, misses=1, opened=1, idle=1)


def test_each_key_gets_its_own_backend() -> None:
    pool = make_pool()
    make_a, make_b = Factory("a"), Factory("b")
    a = pool.checkout(("acme", "fp"), make_a)
    b = pool.checkout(("globex", "fp"), make_b)
    assert a.backend is not b.backend
    pool.checkin(a)
    pool.checkin(b)
    assert pool.checkout(("globex", "fp"), make_b).backend is make_b.made[0]
    assert pool.stats() == expected(hits=1, misses=2, opened=2, idle=1, in_use=1)


def test_busy_connection_is_never_handed_out_twice() -> None:
    pool = make_pool()
    make = Factory("a")
    first = pool.checkout("a", make)
    second = pool.checkout("a", make)  # first is checked out: a second backend is opened
    assert second.backend is not first.backend
    pool.checkin(first)
    pool.checkin(second)
    # The most recently returned idle connection is reused first (likeliest to be alive).
    assert pool.checkout("a", make) is second
    assert pool.stats() == expected(hits=1, misses=2, opened=2, idle=1, in_use=1)


def test_lru_eviction_closes_the_least_recently_used_idle_backend() -> None:
    pool = make_pool(max_connections=2)
    make = {key: Factory(key) for key in "abc"}
    for key in "ab":
        pool.checkin(pool.checkout(key, make[key]))
    pool.checkin(pool.checkout("a", make["a"]))  # "a" is now more recently used than "b"

    c = pool.checkout("c", make["c"])  # full: the LRU idle one ("b") must go
    a_backend, b_backend = make["a"].made[0], make["b"].made[0]
    assert b_backend.close_calls == 1
    assert a_backend.close_calls == 0
    assert pool.stats() == expected(
        hits=1, misses=3, opened=3, closed=1, evicted=1, idle=1, in_use=1
    )
    pool.checkin(c)

    pool.checkin(pool.checkout("b", make["b"]))  # a new "b"; now "a" is the LRU one
    assert a_backend.close_calls == 1
    assert backend_of(c).close_calls == 0
    assert len(make["b"].made) == 2
    assert make["b"].made[1].close_calls == 0
    assert pool.stats() == expected(hits=1, misses=4, opened=4, closed=2, evicted=2, idle=2)


def test_eviction_closes_a_real_anymail_backend_connection(fake_esp: FakeESP) -> None:
    from anymail.backends.mailgun import EmailBackend as MailgunBackend

    pool = make_pool(max_connections=1)
    made: list[MailgunBackend] = []

    def factory(key: str) -> Callable[[], MailgunBackend]:
        def build() -> MailgunBackend:
            backend = MailgunBackend(alias="test", **acme_options(fake_esp, api_key=key))
            made.append(backend)
            return backend

        return build

    for key in (ACME_KEY, NEW_ACME_KEY):
        conn = pool.checkout(key, factory(key))
        assert conn.backend.send_messages([message(key)]) == 1
        pool.checkin(conn)
    try:
        assert made[0].session is None  # closed by the eviction
        assert made[1].session is not None
        assert fake_esp.connections_opened == 2
        wait_until(lambda: fake_esp.open_connections == 1)
        assert pool.stats() == expected(misses=2, opened=2, closed=1, evicted=1, idle=1)
    finally:
        pool.clear()
    wait_until(lambda: fake_esp.open_connections == 0)


def test_idle_timeout_zero_expires_every_idle_backend_at_the_next_checkout() -> None:
    pool = make_pool(idle_timeout=0)
    make_a, make_b = Factory("a"), Factory("b")
    pool.checkin(pool.checkout("a", make_a))
    assert pool.stats().idle == 1  # expiry happens at checkout, not in the background

    pool.checkin(pool.checkout("a", make_a))
    assert len(make_a.made) == 2
    assert make_a.made[0].close_calls == 1

    pool.checkin(pool.checkout("b", make_b))  # another key's checkout expires "a" too
    assert make_a.made[1].close_calls == 1
    assert pool.stats() == expected(misses=3, opened=3, closed=2, expired=2, idle=1)


def test_idle_timeout_keeps_recent_backends_and_expires_old_ones() -> None:
    pool = make_pool(idle_timeout=60)
    make_old, make_new = Factory("old"), Factory("new")
    old = pool.checkout("old", make_old)
    new = pool.checkout("new", make_new)
    pool.checkin(old)
    pool.checkin(new)
    old.last_used -= 61  # idle for longer than IDLE_TIMEOUT, without sleeping

    assert pool.checkout("new", make_new) is new
    assert make_old.made[0].close_calls == 1
    assert make_new.made[0].close_calls == 0
    assert pool.stats() == expected(hits=1, misses=2, opened=2, closed=1, expired=1, in_use=1)


def test_overflow_when_every_connection_is_busy_then_shed_back_to_the_bound() -> None:
    pool = make_pool(max_connections=2)
    make = Factory("a")
    busy = [pool.checkout("a", make) for _ in range(2)]
    assert pool.stats().overflow == 0

    extra = pool.checkout("a", make)  # nothing idle, no room: opened anyway, counted
    assert pool.stats() == expected(misses=3, opened=3, overflow=1, in_use=3)
    pool.checkin(extra)  # 2 busy + 1 idle > 2: the idle one is closed at once
    assert backend_of(extra).close_calls == 1
    assert pool.stats() == expected(misses=3, opened=3, overflow=1, closed=1, evicted=1, in_use=2)

    for conn in busy:
        pool.checkin(conn)
    assert [b.close_calls for b in make.made] == [0, 0, 1]
    assert pool.stats() == expected(misses=3, opened=3, overflow=1, closed=1, evicted=1, idle=2)


def test_lowering_max_connections_sheds_at_the_next_checkin() -> None:
    pool = make_pool(max_connections=4)
    make = Factory("a")
    conns = [pool.checkout("a", make) for _ in range(4)]
    for conn in conns[:3]:
        pool.checkin(conn)
    pool.max_connections = 1
    pool.checkin(conns[3])
    # Oldest idle first: the three returned earlier are closed, the most recent one stays.
    assert [b.close_calls for b in make.made] == [1, 1, 1, 0]
    assert pool.stats() == expected(misses=4, opened=4, closed=3, evicted=3, idle=1)


def test_checkin_discard_closes_and_the_next_checkout_opens_anew() -> None:
    pool = make_pool()
    make = Factory("a")
    conn = pool.checkout("a", make)
    pool.checkin(conn, discard=True)
    assert backend_of(conn).close_calls == 1
    assert pool.stats() == expected(misses=1, opened=1, closed=1, discarded=1)

    assert pool.checkout("a", make).backend is make.made[1]
    assert pool.stats() == expected(misses=2, opened=2, closed=1, discarded=1, in_use=1)


def test_clear_closes_idle_now_and_checked_out_ones_at_checkin() -> None:
    pool = make_pool()
    make_a, make_b = Factory("a"), Factory("b")
    pool.checkin(pool.checkout("a", make_a))
    busy = pool.checkout("b", make_b)

    pool.clear()
    assert make_a.made[0].close_calls == 1
    assert backend_of(busy).close_calls == 0  # in use: not closed under the sender's feet
    assert pool.stats() == expected(misses=2, opened=2, closed=1, in_use=1)

    pool.checkin(busy)  # from an older generation: closed, not pooled
    assert backend_of(busy).close_calls == 1
    assert pool.stats() == expected(misses=2, opened=2, closed=2)

    assert pool.checkout("b", make_b).backend is make_b.made[1]


def test_drop_closes_only_that_tenants_idle_backends() -> None:
    pool = make_pool(max_connections=10)
    made: dict[tuple[str | None, str], Factory] = {
        key: Factory(f"{key[0]}/{key[1]}")
        for key in [("acme", "fp1"), ("acme", "fp2"), ("globex", "fp1"), (None, "fp1")]
    }
    for key, make in made.items():
        pool.checkin(pool.checkout(key, make))
    busy_make = Factory("acme/fp3")
    busy = pool.checkout(("acme", "fp3"), busy_make)

    pool.drop("acme")
    assert {key: make.made[0].close_calls for key, make in made.items()} == {
        ("acme", "fp1"): 1,
        ("acme", "fp2"): 1,
        ("globex", "fp1"): 0,
        (None, "fp1"): 0,
    }
    assert pool.stats() == expected(misses=5, opened=5, closed=2, idle=2, in_use=1)

    pool.checkin(busy)  # drop() only touches idle connections
    assert backend_of(busy).close_calls == 0
    pool.drop("nosuch")
    pool.drop(None)  # platform-account connections have None as the tenant part
    assert made[(None, "fp1")].made[0].close_calls == 1
    assert pool.stats() == expected(misses=5, opened=5, closed=3, idle=2)


@pytest.mark.parametrize("failing", ["factory", "open"])
def test_a_failing_factory_or_open_leaves_in_use_at_zero(failing: str) -> None:
    pool = make_pool(max_connections=1)

    def explode() -> RecordingBackend:
        raise RuntimeError("cannot build")

    if failing == "factory":
        with pytest.raises(RuntimeError, match="cannot build"):
            pool.checkout("a", explode)
    else:
        with pytest.raises(OSError, match="535"):
            pool.checkout("a", Factory("broken", BrokenOpenBackend))
    assert pool.stats() == expected(misses=1)

    # The slot was given back: the pool (bound 1) still works without overflowing.
    conn = pool.checkout("a", Factory("good"))
    pool.checkin(conn)
    assert pool.stats() == expected(misses=2, opened=1, idle=1)


def test_a_backend_whose_open_raised_is_closed() -> None:
    # Django's own convention (BaseEmailBackend.__enter__) is to call close() when open()
    # fails: Django's SMTP backend keeps a half-open, logged-out session in
    # _partial_connection until close() ends it.
    pool = make_pool()
    make = Factory("broken", BrokenOpenBackend)
    with pytest.raises(OSError, match="535"):
        pool.checkout("a", make)
    assert make.made[0].close_calls == 1


def test_after_fork_the_child_forgets_inherited_connections_without_closing_them() -> None:
    pool = make_pool()
    make = Factory("parent")
    pool.checkin(pool.checkout("k", make))
    inherited = make.made[0]

    def child() -> dict[str, Any]:
        child_make = Factory("child")
        conn = pool.checkout("k", child_make)
        got_inherited = conn.backend is inherited
        pool.checkin(conn)
        return {
            "got_inherited": got_inherited,
            "built": len(child_make.made),
            "inherited_close_calls": inherited.close_calls,
            "stats": asdict(pool.stats()),
        }

    report = run_in_fork(child)
    assert report == {
        "got_inherited": False,  # a socket shared with the parent is never reused...
        "built": 1,
        "inherited_close_calls": 0,  # ...nor closed (SMTP QUIT would end the parent's session)
        # Counters carry over from the parent (1 miss, 1 opened); the child adds its own.
        "stats": asdict(expected(misses=2, opened=2, idle=1)),
    }

    # The parent is unaffected: its connection is still idle, open and reused.
    assert pool.checkout("k", make).backend is inherited
    assert len(make.made) == 1
    assert inherited.close_calls == 0
    assert pool.stats() == expected(hits=1, misses=1, opened=1, in_use=1)


def test_forget_inherited_drops_idle_entries_without_closing_them() -> None:
    pool = make_pool()
    make = Factory("a")
    pool.checkin(pool.checkout("a", make))
    pool._forget_inherited()
    assert pool.stats() == expected(misses=1, opened=1)
    assert make.made[0].close_calls == 0
    assert pool.checkout("a", make).backend is make.made[1]


@pytest.mark.parametrize("operation", ["clear", "drop"])
def test_clear_or_drop_in_a_forked_child_does_not_close_inherited_connections(
    operation: str,
) -> None:
    # clear() is what the atexit hook runs when a forked worker exits normally, and drop() is
    # what saving a tenant runs: neither may QUIT the parent's SMTP sessions.
    pool = make_pool()
    make = Factory("parent")
    pool.checkin(pool.checkout(("acme", "fp"), make))

    def child() -> dict[str, Any]:
        if operation == "clear":
            pool.clear()
        else:
            pool.drop("acme")
        return {"inherited_close_calls": make.made[0].close_calls}

    assert run_in_fork(child) == {"inherited_close_calls": 0}


def test_a_connection_checked_out_before_fork_is_forgotten_when_the_child_returns_it() -> None:
    pool = make_pool()
    make = Factory("parent")
    held = pool.checkout("k", make)  # checked out by the thread that forks

    def child() -> dict[str, Any]:
        mine = pool.checkout("k", Factory("child"))  # first use in the child: forgets the parent's
        pool.checkin(held)
        pool.checkin(mine)
        return {"held_close_calls": backend_of(held).close_calls, "in_use": pool.stats().in_use}

    assert run_in_fork(child) == {"held_close_calls": 0, "in_use": 0}
    pool.checkin(held)


def test_module_level_stats_and_clear_use_the_process_wide_pool(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    assert get_pool() is get_pool()
    assert pool_module.stats() == get_pool().stats()
    mailer(tenant="acme").send_messages([message()])
    assert pool_delta() == expected(misses=1, opened=1, idle=1)
    assert fake_esp.open_connections == 1

    pool_module.clear()
    assert pool_delta() == expected(misses=1, opened=1, closed=1)
    wait_until(lambda: fake_esp.open_connections == 0)


# -- through TenantBackend -----------------------------------------------------------------------


def test_many_sends_for_one_tenant_reuse_one_connection(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    with tenant_context(tenants.acme):
        for i in range(10):
            assert mailer().send_messages([message(f"acme {i}")]) == 1
        assert mailer().send_messages([message("batch 1"), message("batch 2")]) == 2

    received = fake_esp.wait_for(12)
    assert {m.credential for m in received} == {ACME_KEY}
    assert len({m.connection_id for m in received}) == 1
    assert fake_esp.connections_opened == 1
    assert pool_delta() == expected(hits=10, misses=1, opened=1, idle=1)


def test_two_tenants_use_two_connections(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    for i in range(4):
        mailer(tenant=tenants.acme).send_messages([message(f"acme {i}")])
        mailer(tenant=tenants.globex).send_messages([message(f"globex {i}")])

    received = fake_esp.wait_for(8)
    connections: dict[str, set[int]] = {m.credential: set() for m in received}
    for m in received:
        connections[m.credential].add(m.connection_id)
    assert set(connections) == {ACME_KEY, GLOBEX_TOKEN}
    assert all(len(ids) == 1 for ids in connections.values())
    assert fake_esp.connections_opened == 2
    assert pool_delta() == expected(hits=6, misses=2, opened=2, idle=2)


def test_tenants_on_the_platform_account_share_its_connection(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    mailer(tenant="initech").send_messages([message("initech")])
    mailer().send_messages([message("platform")])  # public schema

    received = {m.subject: m for m in fake_esp.wait_for(2)}
    assert received["initech"].credential == received["platform"].credential == PLATFORM_KEY
    assert received["initech"].connection_id == received["platform"].connection_id
    assert received["initech"].metadata == {"tenant": "initech"}  # still traced to the tenant
    assert fake_esp.connections_opened == 1
    assert pool_delta() == expected(hits=1, misses=1, opened=1, idle=1)


def test_saved_credential_change_is_used_by_the_next_send_on_a_new_connection(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    # By schema name, as a Celery task would: the tenant row is looked up and cached.
    mailer(tenant="acme").send_messages([message("before")])
    tenants.acme.mail_options = acme_options(fake_esp, api_key=NEW_ACME_KEY)
    tenants.acme.save()
    mailer(tenant="acme").send_messages([message("after")])
    with tenant_context(tenants.globex):
        mailer().send_messages([message("unrelated")])

    received = {m.subject: m for m in fake_esp.wait_for(3)}
    assert received["before"].credential == ACME_KEY
    assert received["after"].credential == NEW_ACME_KEY
    assert received["after"].connection_id != received["before"].connection_id
    # Saving dropped the old idle connection at once; the new key got a pool entry of its own.
    assert pool_delta() == expected(misses=3, opened=3, closed=1, idle=2)
    assert fake_esp.connections_opened == 3
    wait_until(lambda: fake_esp.open_connections == 2)


def test_changed_credentials_get_a_new_pool_entry_even_without_invalidation(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    # As when another process changed the tenant: no post_save here, only new options.
    mailer(tenant=tenants.acme).send_messages([message("old key")])
    tenants.acme.mail_options = acme_options(fake_esp, api_key=NEW_ACME_KEY)
    mailer(tenant=tenants.acme).send_messages([message("new key")])

    received = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert received == {"old key": ACME_KEY, "new key": NEW_ACME_KEY}
    assert pool_delta() == expected(misses=2, opened=2, idle=2)


def test_a_connection_whose_send_raised_is_discarded(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    backend = mailer(tenant="acme")
    backend.send_messages([message("warm up")])
    fake_esp.fail_next(500)
    with pytest.raises(AnymailAPIError) as excinfo:
        backend.send_messages([message("fails")])
    notes = excinfo.value.__notes__
    # The error holds the HTTP response, whose socket it keeps open while it lives.
    del excinfo
    assert any("tenant 'acme'" in note for note in notes)
    assert pool_delta() == expected(misses=1, opened=1, hits=1, closed=1, discarded=1)

    assert backend.send_messages([message("retried")]) == 1
    assert [m.subject for m in fake_esp.wait_for(2)] == ["warm up", "retried"]
    assert fake_esp.rejected == [("mailgun", 500)]
    assert fake_esp.connections_opened == 2
    assert pool_delta() == expected(misses=2, opened=2, hits=1, closed=1, discarded=1, idle=1)


def test_fail_silently_swallows_an_esp_error_but_still_discards_the_connection(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    fake_esp.fail_next(500)
    assert mailer(tenant="acme", fail_silently=True).send_messages([message("lost")]) == 0
    assert pool_delta() == expected(misses=1, opened=1, closed=1, discarded=1)
    assert fake_esp.rejected == [("mailgun", 500)]

    assert mailer(tenant="acme", fail_silently=True).send_messages([message("sent")]) == 1
    assert [m.subject for m in fake_esp.wait_for(1)] == ["sent"]


class Tracer:
    """Attached to an exception: alive exactly as long as the exception is."""


def test_an_error_swallowed_by_fail_silently_is_not_kept_alive(
    tenants: Tenants, fake_esp: FakeESP, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracers: list[weakref.ref[Tracer]] = []

    def trace(error: BaseException | None, **kwargs: Any) -> None:
        assert error is not None
        tracer = Tracer()
        error.tracer = tracer  # type: ignore[attr-defined]
        tracers.append(weakref.ref(tracer))

    # pytest's log capture would keep the "failed silently" record, and the error with it.
    monkeypatch.setattr(logging.getLogger("tenantmail"), "propagate", False)
    post_send.connect(trace)
    gc.disable()  # only reference counting: what a worker relies on between collections
    try:
        fake_esp.fail_next(500)
        assert mailer(tenant="acme", fail_silently=True).send_messages([message()]) == 0
        # Anymail's error holds the HTTP response, whose socket stays open while it lives.
        assert len(tracers) == 1
        assert tracers[0]() is None
    finally:
        gc.enable()
        post_send.disconnect(trace)


def test_fail_silently_never_hides_a_disallowed_backend(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    tenants.acme.mail_backend = "anymail.backends.test.EmailBackend"  # not in ALLOWED_BACKENDS
    with pytest.raises(TenantMailConfigurationError, match="not allowed") as excinfo:
        mailer(tenant=tenants.acme, fail_silently=True).send_messages([message()])
    assert excinfo.value.tenant == "acme"
    assert pool_delta() == expected()  # refused before the pool was touched
    assert fake_esp.messages == []


def test_fail_silently_never_hides_a_backend_that_cannot_be_built(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, pool_delta: Callable[[], PoolStats]
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["tests.nosuch.Backend"]}
    tenants.acme.mail_backend = "tests.nosuch.Backend"
    with pytest.raises(TenantMailConfigurationError, match="cannot import") as excinfo:
        mailer(tenant=tenants.acme, fail_silently=True).send_messages([message()])
    assert excinfo.value.setting == "mail_backend"
    # The pool's factory raised: the slot it reserved was given back.
    assert pool_delta() == expected(misses=1)
    assert fake_esp.messages == []


class ExitingBackend(locmem.EmailBackend):
    """A backend interrupted mid-send, as by a worker's SIGTERM handler calling sys.exit()."""

    def send_messages(self, messages: Any) -> int:
        raise SystemExit(1)


def test_fail_silently_never_swallows_system_exit(
    tenants: Tenants, settings: Any, pool_delta: Callable[[], PoolStats]
) -> None:
    path = f"{__name__}.ExitingBackend"
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": [path]}
    tenants.acme.mail_backend = path
    tenants.acme.mail_options = {}
    try:
        with pytest.raises(SystemExit):
            mailer(tenant=tenants.acme, fail_silently=True).send_messages([message()])
    finally:
        assert pool_delta().discarded == 1


def test_closing_a_tenant_backend_keeps_pooled_connections_open(
    tenants: Tenants, fake_esp: FakeESP, pool_delta: Callable[[], PoolStats]
) -> None:
    with mailer(tenant="acme") as backend:
        backend.send_messages([message("first")])
    backend = mailer(tenant="acme")
    backend.open()
    backend.send_messages([message("second")])
    backend.close()
    with mailer(tenant="acme") as backend:
        backend.send_messages([message("third")])

    assert len({m.connection_id for m in fake_esp.wait_for(3)}) == 1
    assert fake_esp.connections_opened == 1
    assert fake_esp.open_connections == 1
    assert pool_delta() == expected(hits=2, misses=1, opened=1, idle=1)


def test_max_connections_setting_bounds_the_process_pool(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, pool_delta: Callable[[], PoolStats]
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MAX_CONNECTIONS": 1}
    assert get_pool().max_connections == 1

    for schema in ("acme", "globex", "acme"):
        mailer(tenant=schema).send_messages([message(schema)])

    received = [(m.subject, m.credential) for m in fake_esp.wait_for(3)]
    assert received == [("acme", ACME_KEY), ("globex", GLOBEX_TOKEN), ("acme", ACME_KEY)]
    assert fake_esp.connections_opened == 3
    assert pool_delta() == expected(misses=3, opened=3, closed=2, evicted=2, idle=1)
    wait_until(lambda: fake_esp.open_connections == 1)  # the evicted sessions really closed


def test_pool_follows_changes_to_the_setting_both_ways(settings: Any) -> None:
    original = settings.TENANTMAIL
    assert (get_pool().max_connections, get_pool().idle_timeout) == (256, 60.0)  # the defaults
    settings.TENANTMAIL = {**original, "MAX_CONNECTIONS": 3, "IDLE_TIMEOUT": 7}
    assert (get_pool().max_connections, get_pool().idle_timeout) == (3, 7)
    settings.TENANTMAIL = original
    assert (get_pool().max_connections, get_pool().idle_timeout) == (256, 60.0)


def test_idle_timeout_setting_zero_reconnects_every_send(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, pool_delta: Callable[[], PoolStats]
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "IDLE_TIMEOUT": 0}
    for i in range(3):
        mailer(tenant="globex").send_messages([message(f"globex {i}")])
    assert len({m.connection_id for m in fake_esp.wait_for(3)}) == 3
    assert pool_delta() == expected(misses=3, opened=3, closed=2, expired=2, idle=1)
    wait_until(lambda: fake_esp.open_connections == 1)


# -- a bounded pool under contention -------------------------------------------------------------


def hammer(pool: ConnectionPool, key: str, make: Factory, threads: int, sends: int) -> None:
    """``threads`` threads each check ``key`` out ``sends`` times, holding it ~1 ms."""
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(sends):
            conn = pool.checkout(key, make)
            time.sleep(0.001)
            pool.checkin(conn)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def test_max_connections_1_under_contention_reuses_its_one_connection() -> None:
    # Regression: every contended checkout used to overflow, and every checkin shed the other
    # thread's connection again -- a connection per send, nothing reused.
    pool = ConnectionPool(max_connections=1, idle_timeout=60.0, checkout_wait=5.0)
    make = Factory("a")
    hammer(pool, "a", make, threads=4, sends=25)
    stats = pool.stats()
    assert (stats.opened, stats.overflow, stats.hits, stats.idle) == (1, 0, 99, 1)


def test_a_waiting_checkout_takes_the_room_a_checkin_of_another_key_frees() -> None:
    pool = ConnectionPool(max_connections=1, idle_timeout=60.0, checkout_wait=5.0)
    make_a, make_b = Factory("a"), Factory("b")
    held = pool.checkout("a", make_a)
    got: list[Connection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.checkout("b", make_b)))
    waiter.start()
    wait_until(lambda: len(pool._waiters) == 1)
    pool.checkin(held)
    waiter.join()
    pool.checkin(got[0])
    # "a" went idle and was evicted to make room for "b": never more than one open.
    assert [b.close_calls for b in make_a.made] == [1]
    assert pool.stats() == expected(misses=2, opened=2, closed=1, evicted=1, idle=1)


def test_a_checkout_that_waited_in_vain_overflows() -> None:
    pool = ConnectionPool(max_connections=1, idle_timeout=60.0, checkout_wait=0.05)
    make = Factory("a")
    held = pool.checkout("a", make)
    started = time.monotonic()
    extra = pool.checkout("a", make)  # the same thread holds the only one: it cannot come back
    assert time.monotonic() - started >= 0.05
    assert pool.stats() == expected(misses=2, opened=2, overflow=1, in_use=2)
    pool.checkin(extra)
    pool.checkin(held)


class Interrupted(BaseException):
    """What a signal handler raises in the waiting thread (like KeyboardInterrupt)."""


def test_a_wait_interrupted_after_the_handover_puts_the_connection_back() -> None:
    # Regression: a checkin handed the connection to the waiter, then the waiter's wait was
    # interrupted; the connection was never seen again and in_use stayed at 1 forever.
    pool = ConnectionPool(max_connections=1, idle_timeout=60.0, checkout_wait=30.0)
    make = Factory("a")
    held = pool.checkout("a", make)

    def handler(signum: int, frame: Any) -> None:
        # Runs in the waiting (main) thread, inside Condition.wait, with the pool lock released:
        # the checkin hands `held` over to this very waiter, then the wait is interrupted.
        pool.checkin(held)
        raise Interrupted

    def interrupt_once_waiting() -> None:
        wait_until(lambda: len(pool._waiters) == 1)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    interrupter = threading.Thread(target=interrupt_once_waiting)
    try:
        interrupter.start()
        with pytest.raises(Interrupted):
            pool.checkout("a", make)
    finally:
        interrupter.join()
        signal.signal(signal.SIGUSR1, previous)

    assert pool._waiters == deque()
    assert pool.stats() == expected(misses=1, opened=1, idle=1)
    again = pool.checkout("a", make)  # the same connection, not lost: reused, nothing opened
    assert again is held
    assert len(make.made) == 1
    pool.checkin(again)
    assert pool.stats() == expected(hits=1, misses=1, opened=1, idle=1)


def test_max_connections_1_with_concurrent_tenant_sends_opens_one_http_connection(
    tenants: Tenants,
    fake_esp: FakeESP,
    settings: Any,
    pool_delta: Callable[[], PoolStats],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MAX_CONNECTIONS": 1}
    # Waiting far longer than CHECKOUT_WAIT: on a loaded machine three sends ahead in the queue
    # can take longer than that, and the overflow this test forbids would be a timing artefact.
    monkeypatch.setattr(get_pool(), "checkout_wait", 30.0)
    mailer(tenant="acme").send_messages([message("warm")])  # caches the tenant row
    start = threading.Barrier(4)

    def worker(n: int) -> None:
        start.wait()
        for i in range(5):
            mailer(tenant="acme").send_messages([message(f"{n}-{i}")])

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert len(fake_esp.wait_for(21)) == 21
    assert fake_esp.connections_opened == 1
    delta = pool_delta()
    assert (delta.opened, delta.overflow, delta.hits) == (1, 0, 20)
