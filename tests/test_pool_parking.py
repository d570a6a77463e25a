"""The send path's parked connections (ConnectionPool.take / park): a thread's connection is kept
for its next send, and is still an idle connection to everyone else -- reused, evicted, expired,
cleared, dropped and counted like one.

Everything here drives a real ConnectionPool with Django's in-memory backend (recording its
open/close calls), from real threads where another thread is involved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import requests

from tenantmail.pool import Connection, ConnectionPool
from tests.test_pool import Factory, backend_of, expected, run_in_fork, wait_until


def make_pool(
    max_connections: int = 4, idle_timeout: float = 60.0, **kwargs: Any
) -> ConnectionPool:
    return ConnectionPool(max_connections=max_connections, idle_timeout=idle_timeout, **kwargs)


def in_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a new thread (with its own parking slot) and return what it returned."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def test_a_parked_connection_is_taken_back_by_its_thread_and_counted_as_a_hit() -> None:
    pool = make_pool()
    make = Factory("a")
    first = pool.take("a", make)
    pool.park(first)
    # Parked: idle to the pool's accounting, though its thread holds on to it.
    assert pool.stats() == expected(misses=1, opened=1, idle=1)
    again = pool.take("a", make)
    assert again is first
    assert pool.stats() == expected(hits=1, misses=1, opened=1, in_use=1)
    pool.park(again)
    assert pool.stats() == expected(hits=1, misses=1, opened=1, idle=1)
    assert backend_of(first).open_calls == 1
    assert backend_of(first).close_calls == 0


def test_take_for_another_key_returns_the_parked_one_to_the_idle_list() -> None:
    pool = make_pool()
    make_a, make_b = Factory("a"), Factory("b")
    pool.park(pool.take("a", make_a))
    b = pool.take("b", make_b)
    assert b.backend is make_b.made[0]
    assert pool.stats() == expected(misses=2, opened=2, idle=1, in_use=1)
    pool.park(b)
    # "a" is an ordinary idle connection now, and is reused by a checkout for its key.
    assert pool.checkout("a", make_a).backend is make_a.made[0]
    assert pool.stats() == expected(hits=1, misses=2, opened=2, idle=1, in_use=1)


def test_another_thread_reuses_a_parked_connection_for_its_key_instead_of_opening_one() -> None:
    pool = make_pool()
    make = Factory("a")
    in_thread(lambda: pool.park(pool.take("a", make)))  # parked for a thread that has ended
    conn = pool.take("a", make)
    assert conn.backend is make.made[0]
    assert len(make.made) == 1
    pool.park(conn)
    assert pool.stats() == expected(hits=1, misses=1, opened=1, idle=1)


def test_a_parked_connection_is_evicted_like_an_idle_one_when_the_pool_is_full() -> None:
    pool = make_pool(max_connections=1)
    make_a, make_b = Factory("a"), Factory("b")
    in_thread(lambda: pool.park(pool.take("a", make_a)))
    b = pool.take("b", make_b)  # full: the parked "a" is the idle one to go
    assert make_a.made[0].close_calls == 1
    pool.park(b)
    assert pool.stats() == expected(misses=2, opened=2, closed=1, evicted=1, idle=1)


def test_a_waiting_checkout_gets_a_connection_parked_after_it_began_waiting() -> None:
    pool = make_pool(max_connections=1, checkout_wait=5.0)
    make = Factory("a")
    held = pool.take("a", make)
    got: list[Connection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.checkout("a", make)))
    waiter.start()
    wait_until(lambda: len(pool._waiters) == 1)
    pool.park(held)  # sees the waiter: hands the connection over instead of keeping it
    waiter.join(5)
    assert got == [held]
    pool.checkin(got[0])
    assert pool.stats() == expected(hits=1, misses=1, opened=1, idle=1)


def test_a_parked_connection_past_the_idle_timeout_is_closed_not_reused() -> None:
    pool = make_pool(idle_timeout=60)
    make = Factory("a")
    conn = pool.take("a", make)
    pool.park(conn)
    conn.last_used -= 61  # idle for longer than IDLE_TIMEOUT, without sleeping
    fresh = pool.take("a", make)
    assert fresh is not conn
    assert backend_of(conn).close_calls == 1
    pool.park(fresh)
    assert pool.stats() == expected(misses=2, opened=2, closed=1, expired=1, idle=1)


def test_a_thread_that_stopped_sending_has_its_parked_connection_expired_by_others() -> None:
    pool = make_pool(idle_timeout=60)
    make_a, make_b = Factory("a"), Factory("b")
    parked = in_thread(lambda: (conn := pool.take("a", make_a), pool.park(conn))[0])
    parked.last_used -= 61
    pool._sweep_due = 0.0  # the next sweep is due (at most SWEEP_INTERVAL away)
    pool.park(pool.take("b", make_b))
    assert backend_of(parked).close_calls == 1
    assert pool.stats() == expected(misses=2, opened=2, closed=1, expired=1, idle=1)


def test_once_a_sweep_is_due_the_next_take_goes_through_checkout_which_sweeps() -> None:
    # take() only reuses a parked connection while the sweep is not due, so a process whose
    # threads all send warm still sweeps every SWEEP_INTERVAL.
    pool = make_pool()
    make = Factory("a")
    pool.park(pool.take("a", make))
    pool._sweep_due = 0.0
    conn = pool.take("a", make)  # through checkout (which sweeps): still the same connection
    assert conn.backend is make.made[0]
    assert pool._sweep_due > time.monotonic()
    pool.park(conn)
    assert pool.stats() == expected(hits=1, misses=1, opened=1, idle=1)


def test_clear_closes_parked_connections_and_one_in_flight_at_its_park() -> None:
    pool = make_pool()
    make_a, make_b = Factory("a"), Factory("b")
    parked = in_thread(lambda: (conn := pool.take("a", make_a), pool.park(conn))[0])
    in_flight = pool.take("b", make_b)
    pool.clear()
    assert backend_of(parked).close_calls == 1
    assert backend_of(in_flight).close_calls == 0  # not under its sender's feet
    pool.park(in_flight)  # from before the clear: closed, not parked
    assert backend_of(in_flight).close_calls == 1
    assert pool.stats() == expected(misses=2, opened=2, closed=2)


def test_drop_closes_that_tenants_parked_connection() -> None:
    pool = make_pool()
    make_acme, make_globex = Factory("acme"), Factory("globex")
    acme = in_thread(lambda: (c := pool.take(("acme", "fp"), make_acme), pool.park(c))[0])
    globex = in_thread(lambda: (c := pool.take(("globex", "fp"), make_globex), pool.park(c))[0])
    pool.drop("acme")
    assert backend_of(acme).close_calls == 1
    assert backend_of(globex).close_calls == 0
    assert pool.stats() == expected(misses=2, opened=2, closed=1, idle=1)


def test_a_parked_connection_built_from_a_since_patched_client_class_is_not_reused() -> None:
    pool = make_pool()
    make = Factory("a")
    conn = pool.take("a", make)
    pool.park(conn)
    with mock.patch.object(requests, "Session"):
        fresh = pool.take("a", make)
    assert fresh is not conn
    assert backend_of(conn).close_calls == 1
    assert pool.stats().discarded == 1
    pool.checkin(fresh, discard=True)


def test_park_over_the_bound_sheds_instead_of_keeping() -> None:
    pool = make_pool(max_connections=2)
    make = Factory("a")
    conns = [pool.take("a", make) for _ in range(3)]  # the third one overflowed
    for conn in conns[:2]:
        pool.checkin(conn)
    pool.park(conns[2])  # 1 in use + 2 idle > 2: returned, and the oldest idle one shed
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.evicted) == (2, 0, 1)


def test_in_a_forked_child_a_parked_connection_of_the_parent_is_forgotten_not_closed() -> None:
    pool = make_pool()
    make = Factory("parent")
    conn = pool.take("a", make)
    pool.park(conn)

    def child() -> dict[str, Any]:
        child_make = Factory("child")
        taken = pool.take("a", child_make)
        return {
            "reused_parents": taken.backend is make.made[0],
            "parent_closed": make.made[0].close_calls,
            "child_opened": len(child_make.made),
        }

    assert run_in_fork(child) == {"reused_parents": False, "parent_closed": 0, "child_opened": 1}
    assert pool.take("a", make) is conn  # the parent's own is untouched


def test_many_threads_each_sending_warm_never_share_a_connection_and_stats_add_up() -> None:
    pool = make_pool(max_connections=8)
    make = Factory("a")
    in_use: set[int] = set()
    guard = threading.Lock()
    clashes: list[int] = []

    def sender() -> None:
        for _ in range(200):
            conn = pool.take("a", make)
            with guard:
                if id(conn) in in_use:
                    clashes.append(id(conn))
                in_use.add(id(conn))
            time.sleep(0)  # let another thread run while this one "sends"
            with guard:
                in_use.discard(id(conn))
            pool.park(conn)

    threads = [threading.Thread(target=sender) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = pool.stats()
    assert clashes == []
    assert stats.in_use == 0
    assert stats.hits + stats.misses == 6 * 200
    assert stats.opened == stats.misses <= 6
    assert stats.idle == stats.opened - stats.closed
