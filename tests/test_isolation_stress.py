"""Cross-tenant isolation under real concurrency: processes x threads x 250 tenants x rotations.

Three sender processes with four threads each send 5,400 messages for random tenants to the
loopback fake ESP (running in the test process), while a fourth process rotates 24 tenants' Mailgun
keys three times. Every message the fake ESP receives must carry the key of the tenant it was sent
for: the current one or -- only if sent within ``TENANT_CACHE_SECONDS`` of a rotation -- the
previous one; never another tenant's key, never the platform's for a tenant with its own account.

How the database is shared (the delicate part):

* Worker processes must see the tenant rows, so the rows must be *committed*, but the ``db``
  fixture wraps the test in a transaction nobody else can see, and ``transactional_db`` flushes
  every table at teardown -- including the session-wide tenants ``conftest.django_db_setup``
  created, which later tests need. So the test uses ``db`` (pytest-django only creates the test
  database when some test asks for it) but writes its rows from a helper *thread*: Django
  connections are per thread, and that thread's connection is in plain autocommit, outside the
  test's transaction. It ``bulk_create``s 250 tenant *rows* (no schemas: sending only looks the row
  up by schema name, and creating 250 schemas would take minutes) under a prefix no other test
  uses, and a fixture deletes them the same way afterwards -- whatever happened.
* Workers are fresh interpreters (``python -c``, not fork: no inherited sockets, threads or
  connections) that point ``DATABASES["default"]["NAME"]`` at the *test* database before
  ``django.setup()``, and override ``TENANTMAIL`` (cache TTL 1 s, a 16-connection pool, the
  platform account on the fake ESP). Every thread closes its own database connection when done.
* The rotator writes through the ORM (each tenant alternately by ``save()``, with
  ``auto_create_schema`` off on the instance, and by ``update()``) in another process, so senders
  can only learn about a new key when their cached tenant row expires: that is exactly the
  ``TENANT_CACHE_SECONDS`` promise being tested.

Coordination is by counts, not by clocks: children talk JSON lines over stdin/stdout. Rotation
round k starts once the senders have sent k/4 of all messages (and the previous round is more than
TTL + slack old, so a message can be at most one generation behind); sender threads that get ahead
wait (bounded) at a checkpoint until that round is written, so every round happens mid-run. After
the last round the test waits TTL + slack and then lets the senders send their final stretch,
which must all use the newest keys. Every wait has a timeout; only counts and credentials are
asserted. Rotation and send times (``time.time()``, one clock on one machine) only classify which
key is acceptable for a message.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest
from django.core.mail import EmailMessage
from django.db import connection
from django.test.utils import override_settings
from django_tenants.utils import schema_context, schema_exists

from tenantmail import mailer, sending_as
from tenantmail.pool import get_pool
from tenantmail.tenancy import tenant_cache
from tenantmail.testing import FakeESP, ReceivedMessage
from tests.conftest import PLATFORM_KEY
from tests.tenants_app.models import Client

ROOT = Path(__file__).resolve().parent.parent

PREFIX = "iso_t"  # schema names of this test's tenants; no other test uses it
OWN_ACCOUNT_TENANTS = 240  # each with its own Mailgun key
PLATFORM_TENANTS = 10  # no mail config: the platform's account
TENANTS = OWN_ACCOUNT_TENANTS + PLATFORM_TENANTS
ROTATE_EVERY = 10  # every 10th own-account tenant has its key rotated: 24 tenants
ROUNDS = 3  # each of them is rotated this many times
HOT_SHARE = 0.3  # share of sends aimed at rotated tenants, so rotations are well observed

SENDER_PROCESSES = 3
THREADS = 4
PER_THREAD = 450
TOTAL = SENDER_PROCESSES * THREADS * PER_THREAD  # 5,400

TTL = 1.0  # TENANT_CACHE_SECONDS in the workers
SLACK = 0.25  # for the time between reading the clock and the statement/request it brackets
MAX_CONNECTIONS = 16  # per worker process: far fewer than tenants, so LRU eviction is constant
PLATFORM_DOMAIN = "mg.saas.example"

STARTUP_TIMEOUT = 60.0
WAIT_TIMEOUT = 60.0  # any single wait in a child
RUN_TIMEOUT = 150.0  # the whole run, from "go" to the last sender's report
EXIT_TIMEOUT = 30.0
PROGRESS_EVERY = 20

BOOTSTRAP = """\
import os, sys
import django
from django.conf import settings
settings.DATABASES["default"]["NAME"] = os.environ["TENANTMAIL_STRESS_DB"]
django.setup()
from tests.test_isolation_stress import worker_main
sys.exit(worker_main(sys.argv[1], sys.argv[2]))
"""


def schema_of(index: int) -> str:
    return f"{PREFIX}{index:03d}"


def sender_domain(index: int) -> str:
    return f"mg.t{index:03d}.example"


def new_key(index: int, generation: int) -> str:
    return f"key-t{index:03d}-gen{generation}-{secrets.token_hex(8)}"


def checkpoint(round_number: int) -> int:
    """Message index at which a sender thread waits until rotation round ``round_number`` ran."""
    return int(PER_THREAD * (round_number + 0.5) / (ROUNDS + 1))


#: From this message index on, a thread sends only once every rotation is TTL + slack old.
FINAL_STRETCH = int(PER_THREAD * (ROUNDS + 0.75) / (ROUNDS + 1))


def round_threshold(round_number: int) -> int:
    """Messages sent (all senders) before rotation round ``round_number`` may start."""
    return TOTAL * round_number // (ROUNDS + 1)


# -- worker processes ----------------------------------------------------------------------------


class Channel:
    """JSON lines: commands on stdin, reports on stdout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, **report: Any) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()

    @staticmethod
    def commands() -> Iterator[dict[str, Any]]:
        for line in sys.stdin:
            if line.strip():
                yield json.loads(line)


def worker_main(role: str, config_path: str) -> int:
    """Entry point of a worker process (see BOOTSTRAP); returns the exit status."""
    from django.conf import settings
    from django.db import connections

    config = json.loads(Path(config_path).read_text())
    channel = Channel()
    tenantmail_settings = {
        **settings.TENANTMAIL,
        "DEFAULT": {
            "BACKEND": "mailgun",
            "OPTIONS": {
                "api_key": PLATFORM_KEY,
                "sender_domain": PLATFORM_DOMAIN,
                "api_url": config["api_url"],
            },
        },
        "TENANT_CACHE_SECONDS": TTL,
        "MAX_CONNECTIONS": MAX_CONNECTIONS,
    }
    try:
        with override_settings(TENANTMAIL=tenantmail_settings):
            commands = Channel.commands()
            channel.emit(ready=os.getpid())
            if next(commands, {}).get("op") != "go":
                return 3
            if role == "sender":
                run_sender(config, channel, commands)
            elif role == "rotator":
                run_rotator(config, channel, commands)
            else:
                return 4
    finally:
        connections.close_all()
    return 0


def run_sender(
    config: dict[str, Any], channel: Channel, commands: Iterator[dict[str, Any]]
) -> None:
    """THREADS threads, PER_THREAD sends each; writes every send's record to config["output"]."""
    name: str = config["name"]
    schemas: list[str] = config["schemas"]
    hot: list[str] = config["rotated"]
    rotated = {k: threading.Event() for k in range(1, ROUNDS + 1)}
    settled = threading.Event()
    aborted = threading.Event()
    start = threading.Barrier(THREADS, timeout=WAIT_TIMEOUT)
    progress_lock = threading.Lock()
    progress = [0]
    shared = mailer()  # one instance for every thread: the tenant is found per send

    def listen() -> None:
        for command in commands:
            if command.get("op") == "rotated":
                rotated[int(command["round"])].set()
            elif command.get("op") == "settled":
                settled.set()
        aborted.set()  # stdin closed: the test is gone; don't wait for anything any more
        for event in (*rotated.values(), settled):
            event.set()

    def sent_one() -> None:
        with progress_lock:
            progress[0] += 1
            if progress[0] % PROGRESS_EVERY == 0:
                channel.emit(progress=progress[0])

    def wait_for(event: threading.Event) -> None:
        with progress_lock:
            channel.emit(progress=progress[0])  # the hub must see how far we got
        if not event.wait(WAIT_TIMEOUT) or aborted.is_set():
            raise TimeoutError("no go-ahead from the test")

    def send(schema: str, how: int, subject: str) -> int:
        msg = EmailMessage(subject, "body", to=["customer@example.com"])
        if how == 0:
            return mailer(tenant=schema).send_messages([msg])
        if how == 1:
            with schema_context(schema):
                return shared.send_messages([msg])
        with sending_as(schema):
            return shared.send_messages([msg])

    def thread_main(number: int) -> dict[str, Any]:
        rng = random.Random(f"{config['seed']}-{name}-{number}")
        waits = {checkpoint(k): rotated[k] for k in rotated} | {FINAL_STRETCH: settled}
        records: list[list[Any]] = []
        errors: list[str] = []
        try:
            start.wait()
            for i in range(PER_THREAD):
                if i in waits:
                    wait_for(waits[i])
                schema = rng.choice(hot) if rng.random() < HOT_SHARE else rng.choice(schemas)
                subject = f"{schema}|{name}|{number}|{i}"
                final = settled.is_set()
                t0 = time.time()
                try:
                    count = send(schema, i % 3, subject)
                except Exception as exc:
                    errors.append(f"{subject}: {type(exc).__name__}: {exc}")
                    continue
                t1 = time.time()
                if count != 1:
                    errors.append(f"{subject}: send_messages returned {count}")
                records.append([subject, t0, t1, final])
                sent_one()
        except Exception as exc:
            errors.append(f"thread {number}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()  # this thread's own database connection
        return {"records": records, "errors": errors}

    threading.Thread(target=listen, daemon=True).start()
    results: list[dict[str, Any]] = [{} for _ in range(THREADS)]

    def run(number: int) -> None:
        results[number] = thread_main(number)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_TIMEOUT)
    stats = get_pool().stats()
    report = {
        "records": [r for result in results for r in result.get("records", [])],
        "errors": [e for result in results for e in result.get("errors", ["thread hung"])],
        "pool": asdict(stats),
        "tenant_queries": tenant_cache.queries,
    }
    Path(config["output"]).write_text(json.dumps(report))
    channel.emit(done=config["output"])


def run_rotator(
    config: dict[str, Any], channel: Channel, commands: Iterator[dict[str, Any]]
) -> None:
    """Rotate every tenant in config["rotated"] each time the test says so."""
    indexes: dict[str, int] = config["indexes"]
    for command in commands:
        if command.get("op") != "rotate":
            return  # "exit" (or EOF, which ends the loop)
        generation = int(command["round"])
        events = []
        for position, schema in enumerate(config["rotated"]):
            index = indexes[schema]
            key = new_key(index, generation)
            tenant = Client.objects.get(schema_name=schema)
            options = {**tenant.mail_options, "api_key": key}
            before = time.time()
            if (position + generation) % 2:  # each tenant alternates between both ways
                tenant.mail_options = options
                tenant.auto_create_schema = False  # these rows have no schema; don't make one
                tenant.save(update_fields=["mail_options"])
            else:
                Client.objects.filter(pk=tenant.pk).update(mail_options=options)
            after = time.time()  # autocommit: committed by now
            events.append([schema, generation, key, before, after])
        channel.emit(rotated=generation, events=events)


# -- the test process ----------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    log: Path
    reader: threading.Thread | None = None

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except OSError:  # it died: say so, with its stderr
            pytest.fail(f"cannot talk to {self.name}\n{self.log_tail()}")

    def log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) stderr:\n{text[-3000:]}"


class Hub:
    """Starts the children and funnels their reports into one queue."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.children: dict[str, Child] = {}
        self.finished: set[str] = set()  # children whose end of output is expected now
        self.reports: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()

    def start(self, name: str, role: str, config: dict[str, Any]) -> Child:
        config_path = self.tmp / f"{name}.json"
        config_path.write_text(json.dumps(config))
        log = self.tmp / f"{name}.stderr"
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, role, str(config_path)],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        child = Child(name, proc, log)
        assert proc.stdout is not None
        child.reader = threading.Thread(target=self._read, args=(name, proc.stdout), daemon=True)
        child.reader.start()
        self.children[name] = child
        return child

    def _read(self, name: str, stdout: IO[str]) -> None:
        for line in stdout:
            if line.startswith("{"):
                self.reports.put((name, json.loads(line)))
        self.reports.put((name, None))

    def next_report(self, deadline: float) -> tuple[str, dict[str, Any]] | None:
        """The next report, or None if none came within 0.05 s; fails past ``deadline``."""
        if time.monotonic() > deadline:
            self.fail("the run did not finish in time")
        try:
            name, report = self.reports.get(timeout=0.05)
        except queue.Empty:
            return None
        if report is None:
            if name in self.finished:
                return None
            self.fail(f"{name} exited early")
        if "done" in report:
            self.finished.add(name)
        return name, report

    def fail(self, reason: str) -> NoReturn:
        tails = "\n".join(child.log_tail() for child in self.children.values())
        pytest.fail(f"{reason}\n{tails}")

    def wait_exit(self, child: Child) -> int:
        try:
            return child.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"{child.name} did not exit")

    def kill_all(self) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait(EXIT_TIMEOUT)
            for stream in (child.proc.stdin, child.proc.stdout):
                if stream is not None:
                    stream.close()


@dataclass
class Generation:
    key: str
    written_after: float  # the rotator read the clock just before its UPDATE ...
    committed_by: float  # ... and right after it committed


@dataclass
class RunResult:
    history: dict[str, list[Generation]] = field(default_factory=dict)
    records: dict[str, tuple[float, float, bool]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    pools: list[dict[str, int]] = field(default_factory=list)
    tenant_queries: list[int] = field(default_factory=list)
    rounds_done: int = 0


def run_everything(
    hub: Hub, schemas: list[str], rotated: list[str], api_url: str, initial: dict[str, str]
) -> RunResult:
    indexes = {schema_of(i): i for i in range(TENANTS)}
    seed = "tenantmail"  # the tenant choices are reproducible; the interleavings are not
    senders = [
        hub.start(
            f"sender{n}",
            "sender",
            {
                "name": f"s{n}",
                "schemas": schemas,
                "rotated": rotated,
                "api_url": api_url,
                "seed": seed,
                "output": str(hub.tmp / f"sender{n}.out.json"),
            },
        )
        for n in range(SENDER_PROCESSES)
    ]
    rotator = hub.start(
        "rotator", "rotator", {"rotated": rotated, "indexes": indexes, "api_url": api_url}
    )

    deadline = time.monotonic() + STARTUP_TIMEOUT
    ready: set[str] = set()
    while len(ready) < len(hub.children):
        got = hub.next_report(deadline)
        if got is not None and "ready" in got[1]:
            ready.add(got[0])
    for child in hub.children.values():
        child.send(op="go")

    result = RunResult(
        history={schema: [Generation(key, -math.inf, -math.inf)] for schema, key in initial.items()}
    )
    progress = {child.name: 0 for child in senders}
    outputs: dict[str, str] = {}
    in_flight = False
    last_rotation = -math.inf  # monotonic time the previous round was committed
    settled = False
    deadline = time.monotonic() + RUN_TIMEOUT
    while len(outputs) < len(senders):
        got = hub.next_report(deadline)
        if got is not None:
            name, report = got
            if "progress" in report:
                progress[name] = max(progress[name], int(report["progress"]))
            elif "done" in report:
                outputs[name] = str(report["done"])
            elif "rotated" in report:
                assert name == "rotator"
                assert report["rotated"] == result.rounds_done + 1, report
                for schema, generation, key, before, after in report["events"]:
                    history = result.history[schema]
                    assert len(history) == generation, (schema, generation)
                    history.append(Generation(key, before, after))
                result.rounds_done += 1
                in_flight = False
                last_rotation = time.monotonic()
                for sender in senders:
                    sender.send(op="rotated", round=result.rounds_done)
        gap_over = time.monotonic() - last_rotation > TTL + SLACK
        next_round = result.rounds_done + 1
        if (
            not in_flight
            and next_round <= ROUNDS
            and gap_over
            and sum(progress.values()) >= round_threshold(next_round)
        ):
            rotator.send(op="rotate", round=next_round)
            in_flight = True
        if result.rounds_done == ROUNDS and gap_over and not settled:
            settled = True
            for sender in senders:
                sender.send(op="settled")

    rotator.send(op="exit")
    for child in hub.children.values():
        assert hub.wait_exit(child) == 0, child.log_tail()
    for name in sorted(outputs):
        report = json.loads(Path(outputs[name]).read_text())
        result.errors.extend(report["errors"])
        result.pools.append(report["pool"])
        result.tenant_queries.append(report["tenant_queries"])
        for subject, t0, t1, final in report["records"]:
            assert subject not in result.records, f"{subject} sent twice"
            result.records[subject] = (t0, t1, final)
    return result


def key_problem(
    history: list[Generation], generation: int, sent_at: float, returned_at: float
) -> str | None:
    """Why key ``generation`` was not acceptable for a send made in [sent_at, returned_at]."""
    if history[generation].written_after > returned_at:
        return "a key that was not written yet"
    if generation + 1 < len(history):
        replaced = history[generation + 1].committed_by
        # The row was read at most TTL before the send started, and before it was replaced.
        if sent_at > replaced + TTL + SLACK:
            return f"a key replaced {sent_at - replaced:.2f}s before the send"
    return None


def committed[T](fn: Callable[[], T]) -> T:
    """Run ``fn`` on a database connection of its own, in autocommit: other processes see it."""

    def run() -> T:
        try:
            assert not connection.in_atomic_block
            return fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as executor:
        return executor.submit(run).result(timeout=STARTUP_TIMEOUT)


def check_message(
    m: ReceivedMessage,
    subject: str,
    sent_at: float,
    returned_at: float,
    final: bool,
    history: dict[str, list[Generation]],
    owner: dict[str, tuple[str, int]],
    seen: Counter[str],
) -> str | None:
    """What is wrong with the message sent as ``subject``, if anything (and count what it was)."""
    schema = subject.split("|")[0]
    index = int(schema.removeprefix(PREFIX))
    if m.metadata.get("tenant") != schema:
        return f"metadata {m.metadata!r}"
    if schema not in history:  # a platform-account tenant
        seen["platform account"] += 1
        if (m.credential, m.sender_domain) != (PLATFORM_KEY, PLATFORM_DOMAIN):
            return f"a platform tenant sent with {owner.get(m.credential, 'an unknown key')}"
        return None
    if m.credential not in owner or owner[m.credential][0] != schema:
        seen["foreign key"] += 1
        return f"the key of {owner.get(m.credential, ('an unknown tenant',))[0]}"
    if m.sender_domain != sender_domain(index):
        return f"sender domain {m.sender_domain!r}"
    generations = history[schema]
    generation = owner[m.credential][1]
    problem = key_problem(generations, generation, sent_at, returned_at)
    current = max(n for n, g in enumerate(generations) if g.committed_by <= sent_at)
    if generation < current - 1:
        problem = problem or f"generation {generation} when {current} was current"
    if len(generations) > 1:
        seen["rotated tenant"] += 1
        if generation < current:
            seen["rotated tenant, previous key within TTL"] += 1
        if generation == len(generations) - 1:
            seen["rotated tenant, newest key"] += 1
        if final:
            seen["rotated tenant, final stretch"] += 1
            if generation != len(generations) - 1:
                problem = problem or "an old key in the final stretch"
    return problem


def delete_rows() -> None:
    Client.objects.filter(schema_name__startswith=PREFIX).delete()


@pytest.fixture
def committed_tenants(db: None) -> Iterator[None]:
    """Removes this test's committed tenant rows, before (a killed earlier run) and after."""
    committed(delete_rows)
    yield
    committed(delete_rows)


@pytest.mark.slow
@pytest.mark.usefixtures("committed_tenants")
def test_concurrent_senders_never_use_another_tenants_key_while_keys_rotate(
    fake_esp: FakeESP, tmp_path: Path
) -> None:
    api_url = fake_esp.mailgun_api_url
    schemas = [schema_of(i) for i in range(TENANTS)]
    rotated = [schema_of(i) for i in range(0, OWN_ACCOUNT_TENANTS, ROTATE_EVERY)]
    initial = {schema_of(i): new_key(i, 0) for i in range(OWN_ACCOUNT_TENANTS)}
    rows = []
    for i, schema in enumerate(schemas):
        tenant = Client(schema_name=schema, name=f"Isolation {i}")
        if schema in initial:
            tenant.mail_backend = "mailgun"
            tenant.mail_options = {
                "api_key": initial[schema],
                "sender_domain": sender_domain(i),
                "api_url": api_url,
            }
        rows.append(tenant)

    def create() -> str:
        Client.objects.bulk_create(rows)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT mail_options FROM tenants_app_client WHERE schema_name = %s", [schemas[0]]
            )
            (stored,) = cursor.fetchone()
        return str(stored)

    stored = committed(create)
    assert stored.startswith("gAAAAA")  # bulk_create encrypted the credentials too
    assert initial[schemas[0]] not in stored

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TENANTMAIL_STRESS_DB": str(connection.settings_dict["NAME"]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    hub = Hub(tmp_path, env)
    try:
        result = run_everything(hub, schemas, rotated, api_url, initial)
    finally:
        hub.kill_all()

    # Every sender finished its count without an error; every rotation happened mid-run.
    assert result.errors == []
    assert len(result.records) == TOTAL
    assert result.rounds_done == ROUNDS
    assert all(len(result.history[s]) == ROUNDS + 1 for s in rotated)
    # Only rows were written: no schema to leave behind (save() would have made one otherwise).
    assert committed(lambda: [s for s in rotated if schema_exists(s)]) == []

    # Exactly what was sent arrived: nothing lost, nothing duplicated.
    received = fake_esp.wait_for(TOTAL, timeout=10)
    assert len(received) == TOTAL
    by_subject = {m.subject: m for m in received}
    assert len(by_subject) == TOTAL
    assert by_subject.keys() == result.records.keys()

    owner = {
        g.key: (schema, n)
        for schema, history in result.history.items()
        for n, g in enumerate(history)
    }
    assert len(owner) == OWN_ACCOUNT_TENANTS + len(rotated) * ROUNDS  # all keys distinct
    problems: list[str] = []
    seen: Counter[str] = Counter()
    for subject, (t0, t1, final) in result.records.items():
        problem = check_message(
            by_subject[subject], subject, t0, t1, final, result.history, owner, seen
        )
        if problem:
            problems.append(f"{subject}: {problem}")
    assert problems == [], f"{len(problems)} bad messages, e.g. {problems[:10]}"
    assert seen["foreign key"] == 0
    # The run exercised what it claims to: rotated tenants were sent to after the rotations were
    # picked up, platform-account tenants too, and (nearly) every tenant got mail.
    assert seen["rotated tenant, newest key"] > 0
    assert seen["rotated tenant, final stretch"] > 0
    assert seen["platform account"] > 0
    assert len({subject.split("|")[0] for subject in result.records}) >= 200

    # Each process' pool stayed within its bound, evicting all along, and was left idle.
    for stats in result.pools:
        assert stats["in_use"] == 0
        assert stats["idle"] <= MAX_CONNECTIONS
        assert stats["opened"] - stats["closed"] == stats["idle"]
        assert stats["evicted"] > 0
        assert stats["hits"] + stats["misses"] == TOTAL // SENDER_PROCESSES
    # Tenant rows were looked up by schema name through the cache: fewer queries than sends.
    for queries in result.tenant_queries:
        assert 0 < queries < TOTAL // SENDER_PROCESSES
