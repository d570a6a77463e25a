"""Helper processes: the HTTPS fake ESP, and a monitor that samples the benchmark's RSS/sockets.

Both run outside the benchmark process on purpose. In-process, the fake ESP's request handling
would share the benchmark's GIL (diluting every per-message difference), its own sockets would be
counted as the client's, and the messages it records would show up in the client's RSS. The
monitor samples ``/proc/<pid>`` from outside, so sampling costs the measured process nothing.

Each helper is a ``spawn``-ed process answering ``(method, args)`` calls over a pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .common import RAW_KEY, intended_tenant, tenant_key

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _serve(conn: Connection, handler: Any) -> None:
    """The helper side: run ``handler``'s methods until told to stop."""
    try:
        while True:
            try:
                method, args = conn.recv()
            except EOFError:
                return
            if method == "stop":
                conn.send((True, None))
                return
            try:
                conn.send((True, getattr(handler, method)(*args)))
            except Exception as error:
                conn.send((False, f"{type(error).__name__}: {error}"))
    finally:
        handler.close()


class _Helper:
    """The benchmark side of a helper process."""

    def __init__(self, target: Any, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        child.close()
        self._lock = threading.Lock()

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            self._conn.send((method, args))
            ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"helper {method}() failed: {value}")
        return value

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.call("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


# ------------------------------------------------------------------------------- fake ESP


class _EspHandler:
    def __init__(self) -> None:
        raise_fd_limit()
        from django.conf import settings

        if not settings.configured:
            # tenantmail.testing imports django-tenants, which reads settings at import time;
            # the fake ESP itself needs none (and this process never touches the database).
            settings.configure()
        from tenantmail.testing import FakeESP

        self.esp = FakeESP(tls=True)
        self.esp.start()
        self._opened_before = 0  # connections counted before the last clear()
        self._max_open = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._max_open = max(self._max_open, self.esp.open_connections)

    def info(self) -> dict[str, Any]:
        return {"mailgun_api_url": self.esp.mailgun_api_url, "ca": self.esp.ca_bundle_path}

    def counters(self) -> dict[str, int]:
        return {
            "opened": self._opened_before + self.esp.connections_opened,
            "open": self.esp.open_connections,
            "max_open": self._max_open,
        }

    def reset_max_open(self) -> None:
        self._max_open = self.esp.open_connections

    def collect(self) -> dict[str, Any]:
        """Check and forget the messages received so far (keeps this process' memory flat)."""
        messages, rejected = self.esp.messages, self.esp.rejected
        self._opened_before += self.esp.connections_opened
        self.esp.clear()
        wrong = []
        for msg in messages:
            intended = intended_tenant(msg.subject)
            expected = RAW_KEY if intended == "raw" else tenant_key(intended)
            tagged = msg.metadata.get("tenant", intended if intended != "raw" else None)
            if msg.credential != expected or tagged != (None if intended == "raw" else intended):
                wrong.append(f"{msg.subject!r} tagged {tagged!r} sent with {msg!r}")
        times = [msg.received_at for msg in messages]
        return {
            "received": len(messages),
            "rejected": len(rejected),
            "wrong": wrong,
            # When the first and last message arrived (the queue section's throughput span).
            "first_at": min(times, default=0.0),
            "last_at": max(times, default=0.0),
        }

    def close(self) -> None:
        self._stop.set()
        self.esp.stop()


def _esp_main(conn: Connection) -> None:
    _serve(conn, _EspHandler())


class EspProcess(_Helper):
    """``FakeESP(tls=True)`` in its own process."""

    def __init__(self) -> None:
        super().__init__(_esp_main)
        info = self.call("info")
        self.mailgun_api_url: str = info["mailgun_api_url"]
        self.ca_bundle_path: str = info["ca"]

    def counters(self) -> dict[str, int]:
        return dict(self.call("counters"))

    @property
    def connections_opened(self) -> int:
        return int(self.counters()["opened"])

    @property
    def open_connections(self) -> int:
        return int(self.counters()["open"])

    def reset_max_open(self) -> None:
        self.call("reset_max_open")

    def collect(self) -> dict[str, Any]:
        return dict(self.call("collect"))

    def wait_idle(self, expected_open: int, timeout: float = 5.0) -> int:
        """Wait until the server has seen the client close what it closed; the open count."""
        deadline = time.monotonic() + timeout
        while True:
            open_now = self.open_connections
            if open_now <= expected_open or time.monotonic() > deadline:
                return open_now
            time.sleep(0.01)


# ------------------------------------------------------------------------------- monitor


def process_rss(pid: int) -> int:
    """Current resident set size of ``pid`` in bytes (not the peak)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def socket_fds(pid: int) -> int:
    """How many of ``pid``'s file descriptors are sockets (of any kind)."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        with contextlib.suppress(OSError):  # closed between listdir and readlink
            count += os.readlink(f"{fd_dir}/{name}").startswith("socket:")
    return count


@dataclass
class Window:
    """What the monitor saw between ``begin()`` and ``end()``."""

    peak_rss: int = 0
    max_sockets: int | None = None  #: TCP sockets (socket fds minus the non-TCP baseline)
    samples: int = 0


class _MonitorHandler:
    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self._lock = threading.Lock()
        self._window: Window | None = None
        self._socket_baseline: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self._sample()

    def _sample(self) -> None:
        with self._lock:
            window, baseline = self._window, self._socket_baseline
        if window is None:
            return
        rss = process_rss(self.pid)
        sockets = None if baseline is None else socket_fds(self.pid) - baseline
        with self._lock:
            if window is self._window:
                window.peak_rss = max(window.peak_rss, rss)
                window.samples += 1
                if sockets is not None:
                    window.max_sockets = max(window.max_sockets or 0, sockets)

    def begin(self, socket_baseline: int | None) -> None:
        with self._lock:
            self._window = Window()
            self._socket_baseline = socket_baseline
        self._sample()

    def end(self) -> Window:
        self._sample()
        with self._lock:
            window, self._window = self._window or Window(), None
        return window

    def close(self) -> None:
        self._stop.set()


def _monitor_main(conn: Connection, pid: int, interval: float) -> None:
    _serve(conn, _MonitorHandler(pid, interval))


class Monitor(_Helper):
    """Samples this process' RSS (and, when asked, its TCP sockets) every ``interval`` s."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(_monitor_main, os.getpid(), interval)

    def begin(self, *, sockets: bool = False) -> None:
        baseline = None
        if sockets:
            # Socket fds that are not TCP (the database's Unix socket, these helper pipes) are
            # constant during a row: count them once, exactly, and subtract them from samples.
            baseline = socket_fds(os.getpid()) - tcp_sockets()
        self.call("begin", baseline)

    def end(self) -> Window:
        window = self.call("end")
        assert isinstance(window, Window)
        return window


def tcp_sockets() -> int:
    """This process' open TCP sockets, exactly (psutil; too slow to call while timing)."""
    import psutil  # type: ignore[import-untyped]

    return len(psutil.Process().net_connections(kind="tcp"))


def raise_fd_limit() -> None:
    """1,000 pooled connections need more descriptors than the common soft limit of 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
