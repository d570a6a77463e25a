"""The rows of the table: what each one sends, and how a round of it is measured."""

from __future__ import annotations

import gc
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from django.core import mail
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils.module_loading import import_string
from django_tenants.utils import get_tenant_model, schema_context

from tenantmail import pool as tm_pool
from tenantmail.backends import TenantBackend
from tenantmail.tenancy import tenant_cache

from .common import RAW_KEY, TEST_BACKEND, subject_for
from .fixtures import INPROC_OPTIONS
from .procs import EspProcess, Monitor, Window, tcp_sockets

MAILGUN = "anymail.backends.mailgun.EmailBackend"


def new_message() -> EmailMessage:
    """A plain one-recipient message; ``from_email`` is left to defaults, as most apps do."""
    return EmailMessage(
        "bench", "Hello from the tenantmail benchmark.\n", None, ["customer@example.com"]
    )


def floor_message() -> EmailMessage:
    """What TenantBackend hands the inner backend, built by hand: the floor's payload.

    TenantBackend fills in the tenant's ``from_email`` and tags every message with the tenant in
    Anymail ``metadata``; Anymail then encodes both into the request. Giving the raw rows the
    same two fields makes their payloads the same size and shape, so the ratio to the floor
    measures TenantBackend's own work, not a bigger request. (The tag is named differently so
    the credential check still tells the floor's messages from tenants'.)
    """
    message = new_message()
    message.from_email = "hello@raw.example"
    message.metadata = {"floor": "raw"}  # type: ignore[attr-defined]
    return message


def forget_response(message: EmailMessage) -> None:
    """Drop the ESP response Anymail leaves on a sent message.

    ``message.anymail_status.esp_response`` keeps the HTTP response, and through it the socket's
    file object: the socket then stays open after its session was closed, for as long as the
    message lives. Real code drops its messages after sending; the benchmark reuses one message
    per row, so it drops the response at the end of each round instead.
    """
    message.__dict__.pop("anymail_status", None)


def tenant_connection() -> Any:
    """This thread's connection, as django-tenants' wrapper (``set_tenant``, ...)."""
    return connections["default"]


def capture_queries(db: Any) -> CaptureQueriesContext:
    """Django's CaptureQueriesContext, on an emptied query log.

    CaptureQueriesContext counts by slicing the connection's query log, which keeps only the
    last 9,000 statements: once a long run filled it, every capture read 0 (seen on a slow run,
    where the tenant cache expired more often). Nothing else reads the log (DEBUG is off).
    """
    db.queries_log.clear()
    return CaptureQueriesContext(db)


def tenantmail_settings(**changes: Any) -> override_settings:
    return override_settings(TENANTMAIL={**settings.TENANTMAIL, **changes})


@dataclass
class RowStats:
    """Everything measured for one row, over all of its rounds."""

    key: str
    label: str
    network: bool = True
    round_seconds: list[float] = field(default_factory=list)
    round_sends: list[int] = field(default_factory=list)
    queries: int = 0  #: DB statements during the timed rounds (CaptureQueriesContext)
    selects: int = 0  #: SELECTs among them, warm-up included
    conns_opened: int = 0  #: TCP connections the fake ESP accepted during the timed rounds
    warmup_sends: int = 0
    warmup_conns: int = 0
    peak_rss: int = 0  #: highest RSS sampled while the row ran (warm-up included)
    received: int = 0  #: messages the fake ESP recorded (warm-up included)
    sent: int = 0  #: messages the backends reported sent (warm-up included)
    rejected: int = 0
    wrong: list[str] = field(default_factory=list)  #: messages with another tenant's credential
    sockets_end: int | None = None  #: client TCP sockets open at the end (psutil, exact)
    sockets_max: int | None = None  #: highest client TCP socket count sampled during the row
    server_open_max: int | None = None  #: highest count the fake ESP saw open during the row
    pool_overflow: int | None = None
    lookups: int | None = None  #: tenant lookups by schema name (schema_context rows)
    lookup_span: float = 0.0  #: seconds from the first to the last send, for lookups
    tenants: int = 1

    @property
    def timed_sends(self) -> int:
        return sum(self.round_sends)

    @property
    def seconds_per_message(self) -> float:
        """Median over rounds of each round's time per message."""
        return statistics.median(
            s / n for s, n in zip(self.round_seconds, self.round_sends, strict=True)
        )

    @property
    def rate(self) -> float:
        return 1.0 / self.seconds_per_message

    @property
    def queries_per_send(self) -> float:
        return self.queries / self.timed_sends

    def observe(self, window: Window) -> None:
        self.peak_rss = max(self.peak_rss, window.peak_rss)
        if window.max_sockets is not None:
            self.sockets_max = max(self.sockets_max or 0, window.max_sockets)


class Row:
    """One way of sending, driven ``n`` messages at a time by :class:`Bench`."""

    network = True
    sample_sockets = False

    def send(self, n: int) -> int:
        raise NotImplementedError

    def send_one_message(self, backend: BaseEmailBackend, message: EmailMessage, n: int) -> int:
        """The timed loop: the same message through the same backend, ``n`` times."""
        sent = 0
        for _ in range(n):
            sent += backend.send_messages([message])
        return sent

    def take_queries(self) -> int:
        """DB statements made outside the main thread's connection since the last call."""
        return 0

    def after_round(self) -> None:
        """Untimed clean-up after each round."""
        message = getattr(self, "message", None)
        if isinstance(message, EmailMessage):
            forget_response(message)

    def close(self) -> None:
        pass


class RawRow(Row):
    """Row 1: Anymail's Mailgun backend, opened once, so one keep-alive connection."""

    def __init__(self, api_url: str) -> None:
        self.backend = import_string(MAILGUN)(
            alias="bench-raw", api_key=RAW_KEY, sender_domain="mg.raw.example", api_url=api_url
        )
        self.backend.open()
        self.message = floor_message()
        self.message.subject = subject_for("raw")

    def send(self, n: int) -> int:
        return self.send_one_message(self.backend, self.message, n)

    def close(self) -> None:
        self.backend.close()


def naive_connection(backend: str, options: dict[str, Any]) -> BaseEmailBackend:
    """``get_connection(backend, **options)``, as code written without tenantmail does.

    With ``MAILERS`` (Django 6.1) ``get_connection(backend, ...)`` refuses to run; this is what it
    did, and what ``mail.mailers`` does for an alias: import the class, construct it.
    """
    if hasattr(settings, "MAILERS"):
        return cast(BaseEmailBackend, import_string(backend)(alias="naive", **options))
    return get_connection(backend, **options)


class NaiveRow(Row):
    """Row 2: per send, read the tenant's credentials from the DB and build a new connection."""

    def __init__(self, schema_name: str) -> None:
        self.schema_name = schema_name
        self.model = get_tenant_model()
        self.message = new_message()
        self.message.subject = subject_for(schema_name)

    def send(self, n: int) -> int:
        sent = 0
        for _ in range(n):
            tenant = self.model.objects.get(schema_name=self.schema_name)
            backend = naive_connection(MAILGUN, tenant.mail_options)
            # Anymail opens a session for the call and closes it after: a new TLS connection.
            sent += backend.send_messages([self.message])
        return sent


class TenantRow(Row):
    """Rows 3-5: ``TenantBackend`` over tenants taken round-robin.

    ``mode="request"``: the tenant is already loaded, as in a django-tenants request
    (``connection.set_tenant(instance)``, what its middleware does). ``mode="schema"``: under
    ``schema_context(name)``, as in a task that only carries the schema name.
    """

    def __init__(self, tenants: Sequence[Any], *, mode: str = "request") -> None:
        assert mode in ("request", "schema")
        self.tenants = tenants
        self.mode = mode
        self.subjects = [subject_for(t.schema_name) for t in tenants]
        self.backend = TenantBackend()
        self.message = new_message()
        self.next = 0

    def send(self, n: int) -> int:
        tenants, subjects, message = self.tenants, self.subjects, self.message
        backend, db = self.backend, tenant_connection()
        count, start = len(tenants), self.next
        sent = 0
        if count == 1:
            message.subject = subjects[0]
            if self.mode == "request":
                db.set_tenant(tenants[0])
                for _ in range(n):
                    sent += backend.send_messages([message])
            else:
                with schema_context(tenants[0].schema_name):
                    for _ in range(n):
                        sent += backend.send_messages([message])
        elif self.mode == "request":
            for i in range(start, start + n):
                index = i % count
                db.set_tenant(tenants[index])
                message.subject = subjects[index]
                sent += backend.send_messages([message])
        else:
            for i in range(start, start + n):
                index = i % count
                message.subject = subjects[index]
                with schema_context(tenants[index].schema_name):
                    sent += backend.send_messages([message])
        db.set_schema_to_public()
        self.next = (start + n) % count
        return sent


class InProcRawRow(Row):
    """Row 6a: Anymail's test backend (no network), opened once."""

    network = False

    def __init__(self) -> None:
        self.backend = import_string(TEST_BACKEND)(alias="bench-inproc", **INPROC_OPTIONS)
        self.backend.open()
        self.message = floor_message()

    def send(self, n: int) -> int:
        return self.send_one_message(self.backend, self.message, n)

    def after_round(self) -> None:
        super().after_round()
        mail.outbox.clear()  # the test backend keeps every message it "sends"


class InProcTenantRow(Row):
    """Row 6b: ``TenantBackend`` for a tenant whose own account is Anymail's test backend."""

    network = False

    def __init__(self, tenant: Any) -> None:
        self.tenant = tenant
        self.backend = TenantBackend()
        self.message = new_message()

    def send(self, n: int) -> int:
        db = tenant_connection()
        db.set_tenant(self.tenant)
        sent = self.send_one_message(self.backend, self.message, n)
        db.set_schema_to_public()
        return sent

    def after_round(self) -> None:
        super().after_round()
        mail.outbox.clear()


class ThreadedRow(Row):
    """``TenantBackend`` from 8 threads at once, each in its own request context.

    Like the threads of a web server, each thread sends for a tenant drawn at random (seeded)
    for every message, so threads now and then send for the same tenant at the same moment.
    """

    def __init__(self, tenants: Sequence[Any], threads: int = 8) -> None:
        self.tenants = tenants
        self.threads = threads
        self.subjects = [subject_for(t.schema_name) for t in tenants]
        self.rounds = 0
        self._lock = threading.Lock()
        self._queries = 0

    def take_queries(self) -> int:
        with self._lock:
            queries, self._queries = self._queries, 0
        return queries

    def send(self, n: int) -> int:
        per_thread = max(1, n // self.threads)
        seed = self.rounds * self.threads
        self.rounds += 1
        barrier = threading.Barrier(self.threads + 1)
        sent = [0] * self.threads
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            backend, message = TenantBackend(), new_message()
            draws = random.Random(seed + i)
            indexes = [draws.randrange(len(self.tenants)) for _ in range(per_thread)]
            db = tenant_connection()  # this thread's own connection object
            barrier.wait()
            try:
                with capture_queries(db) as queries:
                    for index in indexes:
                        db.set_tenant(self.tenants[index])
                        message.subject = self.subjects[index]
                        sent[i] += backend.send_messages([message])
                with self._lock:
                    self._queries += len(queries.captured_queries)
            except BaseException as error:
                errors.append(error)
            finally:
                db.close()

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(self.threads)]
        for thread in workers:
            thread.start()
        barrier.wait()
        for thread in workers:
            thread.join()
        if errors:
            raise errors[0]
        return sum(sent)


class Bench:
    """Runs rounds of rows and collects :class:`RowStats`."""

    def __init__(self, esp: EspProcess, monitor: Monitor) -> None:
        self.esp = esp
        self.monitor = monitor

    @contextmanager
    def _observed(self, stats: RowStats, row: Row) -> Iterator[dict[str, int]]:
        """Monitor window + ESP counters around a block; yields a dict filled in afterwards."""
        out: dict[str, int] = {}
        self.monitor.begin(sockets=row.sample_sockets)
        before = self.esp.counters()["opened"] if row.network else 0
        try:
            yield out
        finally:
            stats.observe(self.monitor.end())
            if row.network:
                out["conns"] = self.esp.counters()["opened"] - before
                self._check_messages(stats)

    def _check_messages(self, stats: RowStats) -> None:
        report = self.esp.collect()
        stats.received += report["received"]
        stats.rejected += report["rejected"]
        stats.wrong.extend(report["wrong"])

    def warm_up(self, stats: RowStats, row: Row, n: int) -> None:
        """Untimed sends (e.g. to fill the pool); their connections are counted separately."""
        with self._observed(stats, row) as out, capture_queries(connection) as queries:
            sent = row.send(n)
            row.after_round()
        stats.selects += _selects(queries)
        stats.warmup_sends += n
        stats.sent += sent
        stats.warmup_conns += out.get("conns", 0)

    def settle(self, row: Row) -> None:
        """Start each round from the same state, whatever ran before it.

        Garbage left by the previous row is collected now rather than during this row's
        timing, and connections the previous row closed are given time to finish closing on
        the fake ESP's side (its handler threads share that process' GIL with the live ones).
        """
        gc.collect()
        if row.network:
            self.esp.wait_idle(tcp_sockets())

    def round(self, stats: RowStats, row: Row, n: int) -> None:
        """One timed round of ``n`` sends."""
        self.settle(row)
        with self._observed(stats, row) as out:
            with capture_queries(connection) as queries:
                started = time.perf_counter()
                sent = row.send(n)
                elapsed = time.perf_counter() - started
            row.after_round()
        stats.round_seconds.append(elapsed)
        stats.round_sends.append(sent)
        stats.sent += sent
        stats.queries += len(queries.captured_queries) + row.take_queries()
        stats.selects += _selects(queries)
        stats.conns_opened += out.get("conns", 0)

    def finish_sockets(self, stats: RowStats) -> None:
        """Sockets still open at the end of a row, on both sides."""
        stats.sockets_end = tcp_sockets()
        stats.server_open_max = self.esp.counters()["max_open"]
        stats.pool_overflow = tm_pool.stats().overflow


def _selects(queries: CaptureQueriesContext) -> int:
    """Captured statements that read data: django-tenants precedes queries with a SET."""
    return sum(
        1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")
    )


def interleave(bench: Bench, rows: Sequence[tuple[RowStats, Row, int]], rounds: int) -> None:
    """``rounds`` rounds of every row, alternating, so load from elsewhere hits them alike.

    Each round runs the rows in a new (seeded) random order, so no row always runs right after
    the same other row (after row 2's burst of new connections, say).
    """
    order = list(rows)
    shuffler = random.Random(1)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for stats, row, n in order:
            bench.round(stats, row, n)


def lookups_during(stats: RowStats, run: Callable[[], None]) -> None:
    """Count tenant lookups by schema name (tenantmail's own counter) while ``run`` runs."""
    before, started = tenant_cache.queries, time.monotonic()
    run()
    stats.lookups = (stats.lookups or 0) + tenant_cache.queries - before
    stats.lookup_span += time.monotonic() - started


def tenant_cache_footprint(schemas: Sequence[str]) -> int:
    """Python memory the tenant cache holds once every schema in ``schemas`` was looked up.

    This is the only per-tenant state tenantmail keeps (request-context sends hold none): the
    instances ``schema_context`` sends look up, kept up to ``TenantCache.MAX_ENTRIES``. Measured
    with tracemalloc, since RSS would hide it in memory freed by the earlier rows.
    """
    import tracemalloc

    tenant_cache.invalidate()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in schemas:
            tenant_cache.get(name)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        tenant_cache.invalidate()
    return held
