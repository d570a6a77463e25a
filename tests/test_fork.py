"""fork() while another thread holds a tenantmail lock must not hang the child (issue 8, item 7).

The child inherits the lock in its held state but not the thread that would release it; every
tenantmail lock is re-created in the child (``os.register_at_fork``). A SIGALRM in the child turns
a regression into a failure instead of a hung test run.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from django.core.mail import EmailMessage

from tenantmail import config, mailer, pool, tenancy
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, Tenants

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
    # Forking a threaded process is exactly the situation under test.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CHILD_TIMEOUT = 10
LOCK_NAMES = ("tenant cache", "resolved configs", "pool", "pool creation")


def tenantmail_locks() -> dict[str, Any]:
    return {
        "tenant cache": tenancy.tenant_cache._lock,
        "resolved configs": config._resolved._lock,
        "pool": pool.get_pool()._lock,
        "pool creation": pool._pool_lock,
    }


@contextmanager
def held_by_another_thread(locks: list[Any]) -> Iterator[None]:
    acquired, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            acquired.set()
            release.wait()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert acquired.wait(5)
    try:
        yield
    finally:
        release.set()
        thread.join(5)


def send_in_child(tenant: Any, **overrides: Any) -> int:
    """Fork; the child sends one message for ``tenant`` and exits 0. Returns its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child's coverage is not collected)
        code = 1
        try:
            signal.alarm(CHILD_TIMEOUT)  # a hang kills the child: SIGALRM, not exit 0
            sent = mailer(tenant=tenant, **overrides).send_messages(
                [EmailMessage("from the child", "body", to=["someone@example.com"])]
            )
            code = 0 if sent == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.parametrize("lock_name", [*LOCK_NAMES, "all"])
def test_child_sends_although_a_parent_thread_held_a_lock(
    lock_name: str, tenants: Tenants, fake_esp: FakeESP
) -> None:
    # Warm up first (schema name looked up, config resolved, connection pooled), so the child
    # takes the warm path, through every lock.
    mailer(tenant="acme").send_messages([EmailMessage("warm", "b", to=["x@example.com"])])
    locks = tenantmail_locks()
    chosen = list(locks.values()) if lock_name == "all" else [locks[lock_name]]
    parent_pool = pool._pool
    if lock_name in ("pool creation", "all"):
        pool._pool = None  # so the child has to create one, under that lock
    try:
        with held_by_another_thread(chosen):
            # An override the parent never used: the child resolves (and caches) a new config.
            status = send_in_child("acme", api_url=fake_esp.mailgun_api_url)
    finally:
        pool._pool = parent_pool
    assert os.waitstatus_to_exitcode(status) == 0, (
        f"child exit status {os.waitstatus_to_exitcode(status)} (negative: killed by that signal)"
    )
    received = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert received["from the child"] == ACME_KEY
