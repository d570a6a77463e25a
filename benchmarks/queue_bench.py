"""`make bench`, queue section: tenantmail's queue against django-post_office's, end to end.

Side by side in one run, on the same fake ESP process and database as the other rows:

- **throughput**: N messages are queued (N/T each for T tenants), then real worker processes drain
  them: tenantmail's with 1 and with 2 ``manage.py db_worker`` (django-tasks-db), post_office's
  with its own ``manage.py send_queued_mail`` (one process, its default threads), sending the same
  messages through plain Anymail with one account. Messages/s is measured at the fake ESP, from
  the first message received to the last, so process start-up counts for neither. The three run
  in a rotating order, ``rounds`` times; the median rate is reported.
- **enqueue cost in the request**: every ``tenantmail.queue.enqueue()`` of those runs, timed one
  by one in autocommit, as a view would call it (outbox INSERT, then the task's INSERT);
  post_office's ``mail.send()`` is timed the same way, for scale.
- **fairness**: with one worker running, tenant A queues a burst, then tenant B queues 10
  messages; the time from B's first enqueue until B's 10th message is sent.
- **correctness**: every message is checked at the fake ESP for its tenant's credential (post
  office's for the one account), and counted: lost = queued but never received.

A report, not a test: PASS/FAIL per target, appended to the main table's run.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import subject_for
from .queue_backends import URL_ENV

ROOT = Path(__file__).resolve().parent.parent
#: A worker run that takes longer than this is stopped and reported (it should take seconds).
RUN_TIMEOUT = 120.0
FAIRNESS_TARGET_SECONDS = 5.0


@dataclass(frozen=True)
class QueueScale:
    messages: int = 400  #: per throughput run
    tenants: int = 20  #: tenantmail's messages are spread round-robin over this many tenants
    rounds: int = 2  #: each contender runs this many times (rotating order); median reported
    burst: int = 400  #: the big tenant's burst in the fairness run
    small: int = 10  #: the small tenant's messages queued behind it


QUICK_QUEUE = QueueScale(messages=120, tenants=10, rounds=1, burst=120)


@dataclass
class Contender:
    key: str
    label: str
    rates: list[float] = field(default_factory=list)
    queued: int = 0
    received: int = 0
    wrong: list[str] = field(default_factory=list)
    not_sent: int = 0  #: rows the queue itself does not mark sent at the end
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def lost(self) -> int:
        return max(self.queued - self.received, 0)


def _env(esp: Any) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "benchmarks.settings"),
        "PYTHONPATH": str(ROOT),
        URL_ENV: esp.mailgun_api_url,
    }


def _start(esp: Any, *command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
        [sys.executable, "-m", "django", *command],
        cwd=ROOT,
        env=_env(esp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _db_worker(esp: Any, *, batch: bool) -> subprocess.Popen[bytes]:
    extra = ("--batch",) if batch else ()
    return _start(
        esp, "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.05", *extra
    )


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait(procs: Sequence[subprocess.Popen[bytes]], notes: list[str]) -> None:
    """Wait for batch-mode workers to finish the queue and exit."""
    deadline = time.monotonic() + RUN_TIMEOUT
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            notes.append(f"a worker was still running after {RUN_TIMEOUT:.0f} s and was stopped")
    _stop(procs)
    for proc in procs:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode not in (0, -signal.SIGTERM) or "Traceback" in err:
            notes.append(f"worker exit {proc.returncode}: {err.strip()[-600:]}")


def _reset() -> None:
    from django_tasks_db.models import DBTaskResult
    from post_office.models import Email  # type: ignore[import-untyped]

    from tenantmail.models import DrainSlot, OutboxMessage, SendRate

    OutboxMessage.objects.all().delete()
    DBTaskResult.objects.all().delete()
    SendRate.objects.all().delete()
    DrainSlot.objects.all().delete()  # pending flags of the task rows just deleted
    Email.objects.all().delete()  # its Log rows go with it


def _queue_tenantmail(tenants: Sequence[Any], n: int, samples: list[float]) -> None:
    from django.core.mail import EmailMessage

    from tenantmail.queue import enqueue
    from tenantmail.tenancy import sending_as

    for i in range(n):
        tenant = tenants[i % len(tenants)]
        message = EmailMessage(subject_for(tenant.schema_name), "queued body", None, [_to(i)])
        with sending_as(tenant):  # the request's tenant
            started = time.perf_counter()
            enqueue(message)
            samples.append(time.perf_counter() - started)


def _queue_post_office(n: int, samples: list[float]) -> None:
    from post_office import mail  # type: ignore[import-untyped]

    for i in range(n):
        started = time.perf_counter()
        mail.send(
            [_to(i)],
            "hello@raw.example",
            subject=subject_for("raw"),
            message="queued body",
            priority="medium",
        )
        samples.append(time.perf_counter() - started)


def _to(i: int) -> str:
    return f"user{i}@example.com"


def _not_sent(key: str) -> int:
    from post_office.models import STATUS, Email

    from tenantmail.models import OutboxMessage

    if key == "post_office":
        return int(Email.objects.exclude(status=STATUS.sent).count())
    return OutboxMessage.objects.exclude(status=OutboxMessage.Status.SENT).count()


def _throughput_run(
    esp: Any,
    contender: Contender,
    tenants: Sequence[Any],
    n: int,
    enqueue_us: dict[str, list[float]],
) -> None:
    _reset()
    esp.collect()  # forget anything earlier
    if contender.key == "post_office":
        _queue_post_office(n, enqueue_us["post_office"])
        procs = [_start(esp, "send_queued_mail", "--processes", "1")]
    else:
        _queue_tenantmail(tenants, n, enqueue_us["tenantmail"])
        procs = [_db_worker(esp, batch=True) for _ in range(2 if contender.key == "tm2" else 1)]
    _wait(procs, contender.notes)
    seen = esp.collect()
    contender.queued += n
    contender.received += seen["received"]
    contender.wrong += seen["wrong"]
    contender.not_sent += _not_sent(contender.key)
    span = seen["last_at"] - seen["first_at"]
    if seen["received"] > 1 and span > 0:
        contender.rates.append((seen["received"] - 1) / span)


@dataclass
class Fairness:
    burst: int
    small: int
    small_latency: float = float("nan")  #: B's first enqueue → B's last message sent
    burst_seconds: float = float("nan")  #: A's first enqueue → A's last message sent
    received: int = 0
    wrong: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fairness_run(esp: Any, big: Any, small: Any, scale: QueueScale) -> Fairness:
    from django.core.mail import EmailMessage
    from django.db.models import Max

    from tenantmail.models import OutboxMessage
    from tenantmail.queue import enqueue
    from tenantmail.queue.enqueueing import enqueue_many

    result = Fairness(scale.burst, scale.small)
    _reset()
    esp.collect()
    worker = _db_worker(esp, batch=False)
    try:
        # Ready: the worker has sent one message (Django imported, connections open).
        enqueue(
            EmailMessage(subject_for(small.schema_name), "warm-up", None, [_to(0)]), tenant=small
        )
        if not _poll(lambda: _sent(small.schema_name) == 1, 60):
            result.notes.append("the worker never became ready")
            return result
        burst_started = time.time()
        enqueue_many(
            [
                EmailMessage(subject_for(big.schema_name), "burst", None, [_to(i)])
                for i in range(scale.burst)
            ],
            tenant=big,
        )
        small_started = time.time()
        for i in range(scale.small):
            enqueue(
                EmailMessage(subject_for(small.schema_name), "small", None, [_to(i)]), tenant=small
            )
        total = 1 + scale.burst + scale.small
        if not _poll(lambda: _sent() == total, RUN_TIMEOUT):
            result.notes.append(f"not all {total} sent within {RUN_TIMEOUT:.0f} s")
        last = dict(
            OutboxMessage.objects.filter(status=OutboxMessage.Status.SENT)
            .values_list("tenant_schema")
            .annotate(last=Max("sent_at"))
        )
        if small.schema_name in last and big.schema_name in last:
            result.small_latency = last[small.schema_name].timestamp() - small_started
            result.burst_seconds = last[big.schema_name].timestamp() - burst_started
    finally:
        _stop([worker])
    seen = esp.collect()
    result.received, result.wrong = seen["received"], seen["wrong"]
    return result


def _sent(schema: str | None = None) -> int:
    from tenantmail.models import OutboxMessage

    rows = OutboxMessage.objects.filter(status=OutboxMessage.Status.SENT)
    return (rows.filter(tenant_schema=schema) if schema else rows).count()


def _poll(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def run_queue(esp: Any, tenants: Sequence[Any], *, quick: bool) -> list[str]:
    """Run the queue section; returns its report lines (table, notes, targets)."""
    from . import report

    scale = QUICK_QUEUE if quick else QueueScale()
    started = time.monotonic()
    users = list(tenants[: scale.tenants])
    contenders = [
        Contender("post_office", "django-post_office: send_queued_mail (1 process), plain Anymail"),
        Contender("tm1", "tenantmail queue: 1 db_worker (django-tasks-db), TenantBackend"),
        Contender("tm2", "tenantmail queue: 2 db_workers"),
    ]
    enqueue_us: dict[str, list[float]] = {"tenantmail": [], "post_office": []}
    try:
        for round_ in range(scale.rounds):
            shift = round_ % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                _throughput_run(esp, contender, users, scale.messages, enqueue_us)
        fairness = _fairness_run(esp, users[0], users[1], scale)
    finally:
        _reset()
    po, tm1, tm2 = contenders
    rows = [
        (
            c.label,
            f"{c.rate:,.0f}",
            " / ".join(f"{r:,.0f}" for r in c.rates),
            f"{c.received:,} of {c.queued:,}",
            str(len(c.wrong)),
            str(c.lost),
        )
        for c in contenders
    ]
    tm_p50, tm_p95 = (1e6 * _quantile(enqueue_us["tenantmail"], q) for q in (0.5, 0.95))
    po_p50, po_p95 = (1e6 * _quantile(enqueue_us["post_office"], q) for q in (0.5, 0.95))
    fair_total = 1 + fairness.burst + fairness.small
    lost = sum(c.lost for c in contenders) + max(fair_total - fairness.received, 0)
    tm_wrong = len(tm1.wrong) + len(tm2.wrong) + len(fairness.wrong)
    ratio_po = tm1.rate / po.rate if po.rate else float("nan")
    ratio_2 = tm2.rate / tm1.rate if tm1.rate else float("nan")
    targets = [
        report.Target(
            "queue: tenantmail 1 worker ≥ 1.0x post_office (msgs/s)",
            f"{tm1.rate:,.0f} vs {po.rate:,.0f} msgs/s = {ratio_po:.2f}x",
            ratio_po >= 1.0,
        ),
        report.Target(
            "queue: 2 workers ≥ 1.5x 1 worker",
            f"{tm2.rate:,.0f} vs {tm1.rate:,.0f} msgs/s = {ratio_2:.2f}x",
            ratio_2 >= 1.5,
        ),
        report.Target(
            "queue: enqueue() p50 ≤ 2 ms (in the request)",
            f"p50 {tm_p50 / 1000:.2f} ms, p95 {tm_p95 / 1000:.2f} ms "
            f"({len(enqueue_us['tenantmail']):,} enqueues)",
            tm_p50 <= 2000,
        ),
        report.Target(
            f"queue: a small tenant's {fairness.small} behind a {fairness.burst:,} burst "
            f"≤ {FAIRNESS_TARGET_SECONDS:.0f} s",
            f"{fairness.small_latency:.2f} s (the burst took {fairness.burst_seconds:.2f} s)",
            fairness.small_latency <= FAIRNESS_TARGET_SECONDS,
        ),
        report.Target(
            "queue: 0 messages with another tenant's credential",
            f"{tm_wrong} of {tm1.received + tm2.received + fairness.received:,}",
            tm_wrong == 0,
        ),
        report.Target(
            "queue: 0 lost",
            f"{lost} (and {sum(c.not_sent for c in contenders)} rows not marked sent)",
            lost == 0,
        ),
    ]
    notes = [n for c in contenders for n in c.notes] + fairness.notes
    return [
        "queue section"
        + (" (--quick: reduced sizes, not comparable)" if quick else "")
        + f": {scale.messages:,} messages per run ({scale.tenants} tenants round-robin for "
        f"tenantmail), {scale.rounds} round(s) in rotating order, same fake ESP",
        "",
        *report._table(
            ("queue", "msgs/s (median)", "per round", "received", "wrong cred.", "lost"),
            rows,
            right={1, 2, 3, 4, 5},
        ),
        "",
        f"enqueue in the request, one message: tenantmail enqueue() p50 {tm_p50:,.0f} µs, "
        f"p95 {tm_p95:,.0f} µs; post_office mail.send() p50 {po_p50:,.0f} µs, "
        f"p95 {po_p95:,.0f} µs",
        f"fairness (1 worker): tenant {users[1].schema_name}'s {fairness.small} messages, queued "
        f"after tenant {users[0].schema_name}'s burst of {fairness.burst:,}, all sent "
        f"{fairness.small_latency:.2f} s after queueing; the burst took "
        f"{fairness.burst_seconds:.2f} s",
        *(f"  note: {n}" for n in notes),
        *(f"  wrong: {w}" for c in contenders for w in c.wrong[:3]),
        "",
        *report.targets_table(targets),
        "",
        f"queue section: {sum(t.passed for t in targets)} of {len(targets)} targets PASS; "
        f"{time.monotonic() - started:.0f} s",
    ]


def queue_section(esp: Any, *, quick: bool, header: bool) -> list[str]:
    """Set up (idempotent: migrations, the tenants' rows pointed at this fake ESP) and run."""
    import importlib.util
    import traceback

    from . import fixtures, report

    if importlib.util.find_spec("post_office") is None:
        return ["", "queue section skipped: django-post_office is not installed (make bench does)"]
    scale = QUICK_QUEUE if quick else QueueScale()
    try:
        fixtures.migrate()
        fixtures.ensure_tenants(scale.tenants, esp.mailgun_api_url)
        tenants = fixtures.load_tenants(scale.tenants)
        lines = run_queue(esp, tenants, quick=quick)
    except Exception:  # keep the rest of the report; say what broke
        lines = ["queue section FAILED to run:", *traceback.format_exc().splitlines()[-15:]]
    if header:
        lines = [
            *report.machine(),
            f"fake ESP: FakeESP(tls=True), {esp.mailgun_api_url}",
            "",
            *lines,
        ]
    return ["", *lines]
