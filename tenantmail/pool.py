"""A pool of open inner backends, keyed by tenant + config fingerprint.

Like ``psycopg_pool`` / SQLAlchemy's ``QueuePool``: an instance is *checked out* by one thread for
one send and *checked in* afterwards, so Anymail's ``requests`` sessions and SMTP connections (not
safe to share mid-send) are never used by two threads at once, yet stay open -- HTTP keep-alive,
one SMTP session -- across sends. The pool is bounded (``MAX_CONNECTIONS``, least recently used
idle entry evicted first) and idle entries are closed after ``IDLE_TIMEOUT``. When every
connection is checked out, a checkout waits up to ``CHECKOUT_WAIT`` for one to come back (a
checkin hands it to the oldest waiter for its key) before opening one beyond the bound.

The send path uses :meth:`ConnectionPool.take` / :meth:`~ConnectionPool.park` instead of checkout /
checkin: a connection is *parked* for the thread that just sent with it, and that thread's next
send for the same key takes it back without the lock or the pool's bookkeeping (a web worker's
thread sends for one tenant request after request). A parked connection is idle to everyone
else -- counted as idle, reused by another thread that needs its key, evicted and expired like any
idle one -- so the bound, the idle timeout, ``clear()``/``drop()`` and the stats keep their meaning.

A pooled connection is only reused while the client classes it was built from
(``requests.Session``, ``smtplib.SMTP``, boto3's ``Session``) are still the ones in place, so a
test that patches one reaches its patch, as it would with an unpooled backend.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import smtplib
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import requests
from django.core.mail.backends.base import BaseEmailBackend
from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import get_settings
from .exceptions import TenantMailConfigurationError

logger = logging.getLogger("tenantmail.pool")

#: An SMTP session idle for longer than this is probed with NOOP before reuse: servers drop idle
#: sessions, and a message must never be handed to a connection that is already dead.
SMTP_PROBE_AFTER = 1.0

#: How long a checkout waits for a busy connection to come back when every one of the
#: ``MAX_CONNECTIONS`` is checked out, before opening one beyond the bound (like QueuePool's
#: ``timeout``, except that it overflows instead of raising). Without the wait a bounded pool
#: under contention opens a connection per send and sheds it again at checkin.
CHECKOUT_WAIT = 0.5

#: Parked connections of other threads are swept for expiry at least this often (seconds):
#: a thread that stopped sending never takes its own back to notice it expired.
SWEEP_INTERVAL = 1.0

_serials = itertools.count()
_get_ident = threading.get_ident
_monotonic = time.monotonic


def client_classes() -> tuple[object, ...]:
    """The client classes a backend's connection was built from, by identity.

    A test that patches ``requests.Session``, ``smtplib.SMTP`` or ``boto3.session.Session``
    after the first send must reach the patch, as it would with an unpooled Anymail backend: a
    pooled connection built from other classes is not reused. Cheap enough (~0.2 us) to compare
    on every checkout. boto3 is only looked at if something imported it.
    """
    return (
        requests.Session,
        smtplib.SMTP,
        smtplib.SMTP_SSL,
        getattr(sys.modules.get("boto3.session"), "Session", None),
    )


# os.getpid() is a system call, and the pool asks on every checkout and checkin; a fork hook
# keeps the answer current instead.
_process_id = os.getpid()


def _after_fork_in_child() -> None:
    global _process_id, _pool_lock
    _process_id = os.getpid()
    # A lock another thread held at fork() stays held in the child forever.
    _pool_lock = threading.Lock()
    if _pool is not None:
        _pool._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(eq=False)
class Connection:
    """One pooled inner backend."""

    key: Hashable
    backend: BaseEmailBackend
    generation: int
    pid: int = field(default_factory=os.getpid)
    serial: int = field(default_factory=lambda: next(_serials))
    created_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    clients: tuple[object, ...] = field(default_factory=client_classes)
    #: Sends that took this connection back from its thread's parking slot: lock-free, so
    #: counted here by the one thread holding it, and summed by stats().
    parked_hits: int = 0


@dataclass(eq=False)
class _Waiter:
    """A checkout waiting for a connection of ``key`` to come back."""

    key: Hashable
    wakeup: threading.Condition
    conn: Connection | None = None


@dataclass(frozen=True)
class PoolStats:
    hits: int  #: checkouts served by an idle connection
    misses: int  #: checkouts that had to open a new connection
    opened: int
    closed: int
    evicted: int  #: closed to stay within MAX_CONNECTIONS (LRU)
    expired: int  #: closed after IDLE_TIMEOUT
    discarded: int  #: dropped because a send raised, or found dead before reuse
    overflow: int  #: opened beyond MAX_CONNECTIONS because every connection was busy
    idle: int
    in_use: int


def _close_quietly(backend: BaseEmailBackend) -> None:
    # Closing is best effort: the remote end may already be gone, and a failed QUIT must not turn
    # a successful send into an error.
    try:
        backend.close()
    except Exception:
        logger.debug("error closing %s", type(backend).__name__, exc_info=True)


def _still_usable(backend: BaseEmailBackend, idle_for: float) -> bool:
    """Cheap liveness check before reuse.

    HTTP backends need none: urllib3 already discards dropped keep-alive sockets before reuse.
    An SMTP session is probed with NOOP once it has been idle a while.
    """
    # vars(), not getattr(): BaseEmailBackend.__getattr__ makes a missing attribute slow.
    smtp = vars(backend).get("connection")
    if not isinstance(smtp, smtplib.SMTP) or idle_for < SMTP_PROBE_AFTER:
        return True
    try:
        code, _ = smtp.noop()
    except (smtplib.SMTPException, OSError):
        return False
    return code == 250


class ConnectionPool:
    def __init__(
        self, *, max_connections: int, idle_timeout: float, checkout_wait: float = 0.0
    ) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.checkout_wait = checkout_wait
        self._make_locks()
        self._idle: dict[Hashable, list[Connection]] = {}
        self._lru: OrderedDict[int, Connection] = OrderedDict()  # idle, least recently used first
        # Thread ident -> the connection parked for it. Counted in _in_use, so parking and
        # taking back need no lock; whoever pops an entry (dict.pop is atomic) owns it.
        self._parked: dict[int, Connection] = {}
        self._sweep_due = 0.0  # when parked connections are next swept for expiry
        self._live: set[Connection] = set()  # every open connection (for their parked_hits)
        self._folded_hits = 0  # parked_hits of connections closed or forgotten since
        self._in_use = 0
        self._generation = 0
        self._pid = os.getpid()
        self._counts = dict.fromkeys(
            ("hits", "misses", "opened", "closed", "evicted", "expired", "discarded", "overflow"), 0
        )

    def _make_locks(self) -> None:
        # One place that creates every lock, so a fork hook that re-creates them (a lock held by
        # another thread at fork() stays held forever in the child) keeps them consistent.
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()  # checkouts waiting for a checkin, oldest first

    # -- checkout / checkin ------------------------------------------------------------------

    def checkout(self, key: Hashable, factory: Callable[[], BaseEmailBackend]) -> Connection:
        """An open connection for ``key``: an idle one if any, else a new one from ``factory``."""
        while True:
            to_close: list[Connection] = []
            try:
                with self._lock:
                    if _process_id != self._pid:
                        self._forget_inherited()
                    now = time.monotonic()  # one clock read for expiry and the liveness check
                    if self._lru or self._parked:
                        self._expire(now, to_close)
                    conn: Connection | None
                    stack = self._idle.get(key)
                    if stack:  # an idle connection for this key: every warm send
                        conn = stack.pop()  # most recently used: likeliest to still be alive
                        if not stack:
                            del self._idle[key]
                        del self._lru[conn.serial]
                    else:  # idle too: one parked by another thread (counted in use already)
                        conn = self._unpark_key(key, to_close)
                        if conn is not None:
                            self._in_use -= 1  # counted again below, like any checkout
                    if conn is None and self._in_use >= self.max_connections > 0:
                        conn = self._wait_for_checkin(key, to_close)
                    if conn is None:
                        self._counts["misses"] += 1
                        self._make_room(to_close)
                        if self._in_use + len(self._lru) >= self.max_connections:
                            self._counts["overflow"] += 1
                        generation = self._generation
                    else:
                        self._counts["hits"] += 1
                    self._in_use += 1
            finally:  # also when the wait was interrupted: what it expired or evicted is closed
                if to_close:
                    self._close_all(to_close)
            if conn is None:
                return self._open(key, factory, generation)
            idle_for = now - conn.last_used
            if conn.clients == client_classes() and _still_usable(conn.backend, idle_for):
                return conn
            self.checkin(conn, discard=True)
            with self._lock:
                # Not a hit after all: the retry counts as the miss it is.
                self._counts["hits"] -= 1

    def _wait_for_checkin(self, key: Hashable, to_close: list[Connection]) -> Connection | None:
        """Every connection is busy: wait (lock held) for one of ours to be handed over.

        A checkin hands its connection straight to the oldest waiter for that key, so arrivals
        cannot barge past a waiter and starve it. Returns that connection; None once a checkin
        or discard made room to open one within the bound, or after ``checkout_wait`` (the
        caller then overflows).
        """
        deadline = time.monotonic() + self.checkout_wait
        waiter = _Waiter(key, threading.Condition(self._lock))
        self._waiters.append(waiter)
        try:
            while True:
                if waiter.conn is not None:
                    self._in_use -= 1  # counted at handover; the caller counts it again
                    return waiter.conn
                # Parked connections are idle: take ours, or make room by closing another's.
                # Checked after joining the waiters, as park() checks the waiters after
                # parking: whichever of the two comes second sees the other.
                conn = self._unpark_key(key, to_close)
                if conn is not None:
                    self._in_use -= 1  # the caller counts it again
                    return conn
                if self._parked:
                    self._evict_oldest_parked(to_close)
                remaining = deadline - time.monotonic()
                if self._in_use < self.max_connections or remaining <= 0:
                    return None
                waiter.wakeup.wait(remaining)
        except BaseException:
            # Interrupted (a signal handler's exception, KeyboardInterrupt) after a checkin
            # handed us a connection: nobody will ever check it in, so put it back now. The
            # lock is held again here: Condition.wait re-acquires it on its way out.
            self._waiters.remove(waiter)  # first: the connection must not come back to us
            if waiter.conn is not None:
                conn, waiter.conn = waiter.conn, None
                self._release(conn, to_close)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _hand_over(self, conn: Connection) -> bool:
        """Give a checked-in connection to the oldest waiter for its key (lock held)."""
        for waiter in self._waiters:
            if waiter.key == conn.key and waiter.conn is None:
                waiter.conn = conn
                self._in_use += 1
                waiter.wakeup.notify()
                return True
        return False

    def _wake_one(self) -> None:
        """Room was made: wake the oldest waiter still without a connection (lock held)."""
        for waiter in self._waiters:
            if waiter.conn is None:
                waiter.wakeup.notify()
                return

    def checkin(self, conn: Connection, *, discard: bool = False) -> None:
        """Return ``conn``; ``discard=True`` closes it instead (it raised mid-send, or is dead)."""
        to_close: list[Connection] = []
        with self._lock:
            if _process_id != self._pid:
                self._forget_inherited()
            if conn.pid != self._pid:
                # Checked out before a fork, returned in the child: the parent owns the socket
                # (and counted it); the child just lets go of it.
                return
            self._release(conn, to_close, discard=discard)
        if to_close:  # rarely: every warm checkin keeps its connection
            self._close_all(to_close)

    # -- the send path: the connection parked for this thread -------------------------------

    def take(self, key: Hashable, factory: Callable[[], BaseEmailBackend]) -> Connection:
        """:meth:`checkout`, preferring the connection parked for this thread."""
        conn = self.take_parked(key)
        return conn if conn is not None else self.checkout(key, factory)

    def take_parked(self, key: Hashable) -> Connection | None:
        """The connection parked for this thread, if it can serve ``key`` now (no lock).

        It is reused under the conditions an idle one is -- same key, not cleared, not expired,
        built from the client classes in place now, alive -- checked here without the lock:
        only this thread takes from its own slot, and whatever else wants the connection
        (eviction, expiry, another thread's checkout) pops it first or not at all. One that
        cannot serve goes back to the pool (or is closed) and None is returned.
        """
        conn = self._parked.pop(_get_ident(), None)
        if conn is None:
            return None
        now = _monotonic()
        idle_for = now - conn.last_used
        clients = conn.clients
        if (
            conn.key == key
            and conn.generation == self._generation
            and self._pid == _process_id
            and idle_for < self.idle_timeout
            and now < self._sweep_due
            # conn.clients == client_classes(), without the call (every warm send)
            and clients[0] is requests.Session
            and clients[1] is smtplib.SMTP
            and clients[2] is smtplib.SMTP_SSL
            and clients[3] is getattr(sys.modules.get("boto3.session"), "Session", None)
            and (idle_for < SMTP_PROBE_AFTER or _still_usable(conn.backend, idle_for))
        ):
            conn.parked_hits += 1
            return conn
        self._unpark(conn)
        return None

    def park(self, conn: Connection) -> None:
        """:meth:`checkin` for this thread's next :meth:`take` (no lock in the common case)."""
        if (
            not self._waiters
            and conn.generation == self._generation
            and conn.pid == self._pid == _process_id
            and self._in_use + len(self._lru) <= self.max_connections
        ):
            conn.last_used = _monotonic()
            ident = _get_ident()
            if self._parked.setdefault(ident, conn) is conn:
                if self._waiters:  # one began waiting meanwhile: it may be waiting for this
                    self._unpark_own(ident, conn)
                return
        self.checkin(conn)

    def _unpark(self, conn: Connection) -> None:
        """A connection taken from its slot and not reused: back to the pool, as a checkin."""
        to_close: list[Connection] = []
        with self._lock:
            if conn.pid != self._pid or _process_id != self._pid:
                self._after_fork_check()
                return  # the parent's (see checkin): the child lets go of it
            now = time.monotonic()
            idle_for = now - conn.last_used
            if conn.generation == self._generation and idle_for >= self.idle_timeout:
                self._in_use -= 1
                self._counts["expired"] += 1
                to_close.append(conn)
                if self._waiters:
                    self._wake_one()
            elif conn.clients != client_classes() or not _still_usable(conn.backend, idle_for):
                self._release(conn, to_close, discard=True)
            else:  # another key, or a cleared generation (closed by _release)
                self._release(conn, to_close)
        if to_close:
            self._close_all(to_close)

    def _unpark_own(self, ident: int, conn: Connection) -> None:
        to_close: list[Connection] = []
        with self._lock:
            if self._parked.pop(ident, None) is conn:
                self._release(conn, to_close)  # hands it to the oldest waiter for its key
            # else: the waiter (or a sweep) popped it already
        if to_close:
            self._close_all(to_close)

    def _pop_parked(self, ident: int, conn: Connection, to_close: list[Connection]) -> bool:
        """Pop ``conn`` from ``ident``'s slot, if it is still there (lock held).

        The slot's thread may have taken it back since the caller looked (False), or taken it,
        sent and parked another one: that one is fresh, so it goes to the idle list, not away.
        """
        got = self._parked.pop(ident, None)
        if got is conn:
            return True
        if got is not None:
            self._release(got, to_close)
        return False

    def _unpark_key(self, key: Hashable, to_close: list[Connection]) -> Connection | None:
        """Pop a connection parked by any thread for ``key``; still counted in use (lock held)."""
        for ident, conn in list(self._parked.items()):
            if (
                conn.key == key
                and conn.generation == self._generation
                and self._pop_parked(ident, conn, to_close)
            ):
                return conn
        return None

    def _evict_oldest_parked(self, to_close: list[Connection]) -> bool:
        """Close the least recently used parked connection; False if none was left (lock held)."""
        for ident, conn in sorted(self._parked.items(), key=lambda item: item[1].last_used):
            if self._pop_parked(ident, conn, to_close):
                self._in_use -= 1
                self._counts["evicted"] += 1
                to_close.append(conn)
                return True
        return False

    def _release(
        self, conn: Connection, to_close: list[Connection], *, discard: bool = False
    ) -> None:
        """``conn`` (counted in use) is free again: to a waiter, idle, or to close (lock held)."""
        self._in_use -= 1
        if discard or conn.generation != self._generation:
            if discard:
                self._counts["discarded"] += 1
            to_close.append(conn)
            if self._waiters:
                self._wake_one()
            return
        if self._waiters and self._hand_over(conn):
            return
        conn.last_used = time.monotonic()
        stack = self._idle.get(conn.key)
        if stack is None:  # not setdefault: that builds a list on every checkin
            self._idle[conn.key] = [conn]
        else:
            stack.append(conn)
        self._lru[conn.serial] = conn
        # Over the bound (busy burst, or MAX_CONNECTIONS lowered): shed the oldest.
        while self._lru and self._in_use + len(self._lru) > self.max_connections:
            to_close.append(self._evict_oldest())
        if self._waiters:
            self._wake_one()  # waiting for another key: it may evict this one now

    def _open(
        self, key: Hashable, factory: Callable[[], BaseEmailBackend], generation: int
    ) -> Connection:
        backend: BaseEmailBackend | None = None
        try:
            backend = factory()
            backend.open()
        except BaseException:
            # Django's contract: close() after a failed open() -- its SMTP backend keeps a
            # half-open session (refused login, failed STARTTLS) until then.
            if backend is not None:
                _close_quietly(backend)
            with self._lock:
                self._in_use -= 1
                if self._waiters:
                    self._wake_one()
            raise
        conn = Connection(key=key, backend=backend, generation=generation)
        with self._lock:
            self._counts["opened"] += 1
            self._live.add(conn)
        return conn

    # -- bookkeeping (call with the lock held) -----------------------------------------------

    def _remove_idle(self, conn: Connection) -> None:
        stack = self._idle[conn.key]
        stack.remove(conn)
        if not stack:
            del self._idle[conn.key]

    def _evict_oldest(self) -> Connection:
        _, conn = self._lru.popitem(last=False)
        self._remove_idle(conn)
        self._counts["evicted"] += 1
        return conn

    def _make_room(self, to_close: list[Connection]) -> None:
        while self._lru and self._in_use + len(self._lru) >= self.max_connections:
            to_close.append(self._evict_oldest())
        # Still full: parked connections are idle too (each its thread's most recent, so last).
        while (
            self._parked
            and self._in_use >= self.max_connections
            and self._evict_oldest_parked(to_close)
        ):
            pass

    def _expire(self, now: float, to_close: list[Connection]) -> None:
        lru = self._lru
        while lru:
            conn = lru[next(iter(lru))]
            if now - conn.last_used < self.idle_timeout:
                break
            del self._lru[conn.serial]
            self._remove_idle(conn)
            self._counts["expired"] += 1
            to_close.append(conn)
        if now >= self._sweep_due:
            self._sweep_parked(now, to_close)
            self._sweep_due = now + min(SWEEP_INTERVAL, self.idle_timeout)

    def _sweep_parked(self, now: float, to_close: list[Connection]) -> None:
        """Close parked connections that expired, or were cleared (lock held)."""
        for ident, conn in list(self._parked.items()):
            cleared = conn.generation != self._generation
            if (cleared or now - conn.last_used >= self.idle_timeout) and self._pop_parked(
                ident, conn, to_close
            ):
                self._in_use -= 1
                if not cleared:
                    self._counts["expired"] += 1
                to_close.append(conn)

    def _after_fork_check(self) -> None:
        if _process_id != self._pid:
            self._forget_inherited()

    def _forget_inherited(self) -> None:
        # In a forked child the sockets belong to the parent too: closing them here would send
        # SMTP QUIT on the parent's session. Forget them; the parent closes its own.
        self._pid = _process_id
        self._idle.clear()
        self._lru.clear()
        self._parked = {}
        self._folded_hits += sum(conn.parked_hits for conn in self._live)
        self._live = set()
        self._in_use = 0
        self._waiters = deque()  # their threads were not forked
        self._generation += 1

    def _close_all(self, conns: list[Connection]) -> None:
        for conn in conns:
            _close_quietly(conn.backend)
        if conns:
            with self._lock:
                self._counts["closed"] += len(conns)
                for conn in conns:
                    if conn in self._live:  # not if forgotten at a fork meanwhile
                        self._live.remove(conn)
                        self._folded_hits += conn.parked_hits

    # -- maintenance -------------------------------------------------------------------------

    def clear(self) -> None:
        """Close every idle connection; connections checked out now are closed at checkin."""
        with self._lock:
            self._after_fork_check()  # never close (SMTP QUIT) a parent's sessions in a child
            self._generation += 1
            to_close = list(self._lru.values())
            self._lru.clear()
            self._idle.clear()
            self._sweep_parked(time.monotonic(), to_close)  # every parked one is stale now
        self._close_all(to_close)

    def drop(self, key_prefix: Any) -> None:
        """Close idle connections whose key starts with ``key_prefix`` (e.g. one tenant)."""
        with self._lock:
            self._after_fork_check()
            doomed = [c for c in self._lru.values() if _starts_with(c.key, key_prefix)]
            for conn in doomed:
                del self._lru[conn.serial]
                self._remove_idle(conn)
            for ident, conn in list(self._parked.items()):
                if _starts_with(conn.key, key_prefix) and self._pop_parked(ident, conn, doomed):
                    self._in_use -= 1
                    doomed.append(conn)
        self._close_all(doomed)

    def stats(self) -> PoolStats:
        with self._lock:
            self._after_fork_check()
            counts = dict(self._counts)
            counts["hits"] += self._folded_hits + sum(c.parked_hits for c in self._live)
            parked = len(self._parked)  # idle to everyone, though counted in _in_use
            return PoolStats(**counts, idle=len(self._lru) + parked, in_use=self._in_use - parked)


def _starts_with(key: Hashable, prefix: Any) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] == prefix


_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ConnectionPool:
    """The process-wide pool, created on first use from ``TENANTMAIL`` settings."""
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:  # pragma: no branch  (lost the race: another thread made it)
                s = get_settings()
                _pool = ConnectionPool(
                    max_connections=s.max_connections,
                    idle_timeout=s.idle_timeout,
                    checkout_wait=CHECKOUT_WAIT,
                )
            pool = _pool
    return pool


def stats() -> PoolStats:
    return get_pool().stats()


def clear() -> None:
    get_pool().clear()


def clear_if_created() -> None:
    """Like :func:`clear`, without creating the pool (which reads settings that may be bad)."""
    if _pool is not None:
        _pool.clear()


@receiver(setting_changed)
def _resize_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "TENANTMAIL" and _pool is not None:
        try:
            s = get_settings()
        except TenantMailConfigurationError:
            return  # keep the old sizes; the error surfaces at the next send and in checks
        _pool.max_connections = s.max_connections
        _pool.idle_timeout = s.idle_timeout


@atexit.register
def _close_at_exit() -> None:
    # Say goodbye properly (SMTP QUIT) rather than leave the ESP to time sessions out.
    if _pool is not None:
        with contextlib.suppress(Exception):
            _pool.clear()
