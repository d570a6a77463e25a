"""Fixtures for the queue: committed writes, real ``db_worker`` processes, fast queue settings.

Workers are separate processes, so they only see *committed* rows, while the ``db`` fixture wraps
each test in a transaction nobody else sees (and ``transactional_db`` would flush the
session-wide tenants). As in ``test_isolation_stress``, rows the workers must see are written
from a helper thread, whose connection is in plain autocommit, and removed the same way after.
Reads from the test thread see them (READ COMMITTED).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import connection, connections

from tenantmail.models import OutboxMessage
from tenantmail.testing import FakeESP
from tests.conftest import PLATFORM_KEY

ROOT = Path(__file__).resolve().parent.parent.parent
T = TypeVar("T")

#: Short leases and backoffs so retries and recovery happen within a test's seconds.
FAST_QUEUE = {
    "LEASE_SECONDS": 2,
    "BACKOFF_SECONDS": 0.2,
    "BACKOFF_MAX_SECONDS": 1,
    "MAX_ATTEMPTS": 4,
    "RECOVER_EVERY_SECONDS": 0.5,
    "REQUEUE_AFTER_SECONDS": 30,
}


def committed[T](fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on a helper thread (its own autocommit connection) and return its result."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _delete_queue_rows() -> None:
    from django_tasks_db.models import DBTaskResult

    from tenantmail.models import DrainSlot, SendRate

    OutboxMessage.objects.all().delete()
    DBTaskResult.objects.all().delete()
    SendRate.objects.all().delete()
    DrainSlot.objects.all().delete()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            from collections import Counter

            statuses = Counter(OutboxMessage.objects.values_list("status", flat=True))
            pytest.fail(f"timed out after {timeout}s waiting for {what}\noutbox: {statuses}")
        time.sleep(0.05)


class Workers:
    """Starts ``manage.py db_worker`` processes against the test database."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "db_worker",
                    "--no-startup-delay",
                    "--no-reload",
                    "--interval",
                    "0.05",
                    "--verbosity",
                    "0",
                    *args,
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name} (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}"
            for proc, log in self.procs
        )

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    """Per-process worker state (recovery throttle, watchdog horizon) starts empty."""
    from tenantmail.queue import recovery

    recovery._last_run = -float("inf")
    recovery._watched_until = None
    yield
    recovery._last_run = -float("inf")
    recovery._watched_until = None


def deliveries() -> Any:
    """The drain tasks (not the recovery watchdogs) in the task table."""
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(task_path="tenantmail.queue.tasks.drain_outbox")


@pytest.fixture
def queue_settings(settings: Any) -> dict[str, Any]:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": dict(FAST_QUEUE)}
    return settings.TENANTMAIL["QUEUE"]  # type: ignore[no-any-return]


def worker_env(fake_esp: FakeESP, queue: dict[str, Any]) -> dict[str, str]:
    """The environment of a worker process: test database, fake ESP, these queue settings."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.queue.worker_settings",
        "PYTHONPATH": str(ROOT),
        "TENANTMAIL_TEST_DB_NAME": connection.settings_dict["NAME"],
        "TENANTMAIL_PLATFORM_KEY": PLATFORM_KEY,
        "TENANTMAIL_FAKE_MAILGUN_URL": fake_esp.mailgun_api_url,
        "TENANTMAIL_QUEUE": json.dumps(queue),
    }


@pytest.fixture
def workers(
    tenants: Any, fake_esp: FakeESP, tmp_path: Path, queue_settings: dict[str, Any]
) -> Iterator[Workers]:
    committed(_delete_queue_rows)
    pool = Workers(worker_env(fake_esp, queue_settings), tmp_path)
    try:
        yield pool
    finally:
        pool.stop()
        committed(_delete_queue_rows)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port, for this test only (no persistence)."""
    import shutil
    import socket

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/ensure-redis.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "redis.log"
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        server.terminate()
        server.wait(10)
