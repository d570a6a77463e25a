"""A tenant on its own SMTP server (hooli): Django's real SMTP backend against a real SMTP server.

``fake_smtp`` is aiosmtpd on loopback; it records ``"user:password"`` for every message and
counts SMTP sessions, so credentials and session reuse are checked from the server's side.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from django.core.mail.backends import smtp as django_smtp
from django_tenants.utils import tenant_context

import tenantmail.pool as pool_module
from tenantmail import mailer
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.pool import PoolStats
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import HOOLI_PASSWORD, HOOLI_USER, Tenants, hooli_options
from tests.test_pool import expected, message, run_in_fork, stats_since_now, wait_until

HOOLI_CREDENTIAL = f"{HOOLI_USER}:{HOOLI_PASSWORD}"


@pytest.fixture(autouse=True)
def _settled(fake_smtp: FakeSMTP) -> None:
    """Start once the server has ended the previous test's sessions (closed at its teardown)."""
    wait_until(lambda: fake_smtp.open_connections == 0)


@pytest.fixture
def pool_delta() -> Callable[[], PoolStats]:
    return stats_since_now()


@pytest.fixture
def strict_smtp() -> Iterator[FakeSMTP]:
    """An SMTP server that only accepts hooli's real password."""
    with FakeSMTP(users={HOOLI_USER: HOOLI_PASSWORD}) as server:
        yield server


def drop_server_sessions(server: FakeSMTP) -> None:
    """Have the server hang up every open session, as servers do to sessions left idle."""
    controller = server._controller
    assert controller is not None
    with server._lock:
        sessions = list(server._live)
    assert sessions, "no SMTP session to drop"
    for session in sessions:
        controller.loop.call_soon_threadsafe(session.transport.close)
    wait_until(lambda: server.open_connections == 0)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RecordingSMTPBackend(django_smtp.EmailBackend):
    """Django's SMTP backend, remembering each instance and its close() calls."""

    instances: ClassVar[list[RecordingSMTPBackend]] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.close_calls = 0
        RecordingSMTPBackend.instances.append(self)

    def close(self) -> None:
        self.close_calls += 1
        super().close()


def test_hooli_sends_through_its_own_server_with_its_own_credentials(
    tenants: Tenants, fake_smtp: FakeSMTP, fake_esp: FakeESP
) -> None:
    with tenant_context(tenants.hooli):
        assert mailer().send_messages([message("from hooli")]) == 1

    (received,) = fake_smtp.wait_for(1)
    assert received.esp == "smtp"
    assert received.credential == HOOLI_CREDENTIAL
    assert received.subject == "from hooli"
    assert received.to == ["customer@example.com"]
    assert received.from_email == "platform@saas.example"  # DEFAULT_FROM_EMAIL; no tenant default
    assert fake_esp.messages == []  # not the platform's ESP account


def test_several_sends_share_one_smtp_session(
    tenants: Tenants, fake_smtp: FakeSMTP, pool_delta: Callable[[], PoolStats]
) -> None:
    with tenant_context(tenants.hooli):
        for i in range(3):
            mailer().send_messages([message(f"context {i}")])
    for i in range(3):
        mailer(tenant="hooli").send_messages([message(f"by name {i}")])
    mailer(tenant=tenants.hooli).send_messages([message("batch 1"), message("batch 2")])

    received = fake_smtp.wait_for(8)
    assert {m.credential for m in received} == {HOOLI_CREDENTIAL}
    assert len({m.connection_id for m in received}) == 1
    assert fake_smtp.connections_opened == 1
    assert fake_smtp.open_connections == 1  # still open, ready for the next send
    assert pool_delta() == expected(hits=6, misses=1, opened=1, idle=1)

    pool_module.clear()  # says QUIT
    wait_until(lambda: fake_smtp.open_connections == 0)


def test_a_dropped_idle_session_is_found_by_the_noop_probe_and_replaced(
    tenants: Tenants,
    fake_smtp: FakeSMTP,
    monkeypatch: pytest.MonkeyPatch,
    pool_delta: Callable[[], PoolStats],
) -> None:
    monkeypatch.setattr(pool_module, "SMTP_PROBE_AFTER", 0.0)  # probe before every reuse
    backend = mailer(tenant="hooli")
    backend.send_messages([message("first")])
    backend.send_messages([message("a live session passes the probe")])
    assert fake_smtp.connections_opened == 1

    drop_server_sessions(fake_smtp)
    assert backend.send_messages([message("after the drop")]) == 1

    received = fake_smtp.wait_for(3)
    assert [m.subject for m in received] == [
        "first",
        "a live session passes the probe",
        "after the drop",
    ]
    assert received[2].connection_id != received[0].connection_id
    assert received[2].credential == HOOLI_CREDENTIAL
    assert fake_smtp.connections_opened == 2
    # The dead session was discarded by the probe; the retry counts as a miss, not a hit.
    assert pool_delta() == expected(hits=1, misses=2, opened=2, closed=1, discarded=1, idle=1)


def test_without_the_probe_a_dropped_session_is_noticed_and_replaced_before_the_send(
    tenants: Tenants,
    fake_smtp: FakeSMTP,
    monkeypatch: pytest.MonkeyPatch,
    pool_delta: Callable[[], PoolStats],
) -> None:
    # Regression: a session that died while idle in the pool used to fail the next send with
    # SMTPServerDisconnected, where Django's unpooled backend would have delivered it.
    monkeypatch.setattr(pool_module, "SMTP_PROBE_AFTER", 3600.0)
    backend = mailer(tenant="hooli")
    backend.send_messages([message("first")])
    drop_server_sessions(fake_smtp)

    assert backend.send_messages([message("after the drop")]) == 1

    received = fake_smtp.wait_for(2)
    assert [m.subject for m in received] == ["first", "after the drop"]
    assert received[1].credential == HOOLI_CREDENTIAL
    assert fake_smtp.connections_opened == 2
    # The pooled backend reconnected by itself: for the pool it was an ordinary hit.
    assert pool_delta() == expected(hits=1, misses=1, opened=1, idle=1)


@pytest.mark.parametrize(
    "options",
    [
        {"port": 2525, "username": HOOLI_USER, "password": HOOLI_PASSWORD},
        {"host": "", "port": 2525, "username": HOOLI_USER, "password": HOOLI_PASSWORD},
    ],
    ids=["no-host", "blank-host"],
)
def test_smtp_config_without_host_is_refused_and_nothing_is_sent(
    tenants: Tenants,
    fake_smtp: FakeSMTP,
    fake_esp: FakeESP,
    options: dict[str, Any],
    pool_delta: Callable[[], PoolStats],
) -> None:
    tenants.hooli.mail_options = options
    tenants.hooli.confirm_mail_endpoint_change()  # the platform's own test set-up
    tenants.hooli.save()

    for fail_silently in (False, True):
        with (
            tenant_context(tenants.hooli),
            pytest.raises(TenantMailConfigurationError) as excinfo,
        ):
            mailer(fail_silently=fail_silently).send_messages([message()])
        error = excinfo.value
        assert (error.tenant, error.setting) == ("hooli", "mail_options")
        assert str(error).startswith("tenant 'hooli', mail_options: ")
        assert "'host'" in str(error)
        assert HOOLI_PASSWORD not in str(error)

    with pytest.raises(TenantMailConfigurationError, match="'host'"):
        mailer(tenant="hooli").send_messages([message()])  # by schema name: the saved row
    assert fake_smtp.messages == []
    assert fake_smtp.connections_opened == 0
    assert fake_esp.messages == []  # no fallback to the platform account either
    assert pool_delta() == expected()


def test_a_refused_login_raises_and_sends_nothing(
    tenants: Tenants, strict_smtp: FakeSMTP, pool_delta: Callable[[], PoolStats]
) -> None:
    tenants.hooli.mail_options = {**hooli_options(strict_smtp), "password": "wrong-password-5"}
    with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
        mailer(tenant=tenants.hooli).send_messages([message()])
    assert excinfo.value.smtp_code == 535
    assert strict_smtp.messages == []
    # smtplib tries each AUTH mechanism the server offers (PLAIN, LOGIN): each is refused.
    assert strict_smtp.rejected
    assert set(strict_smtp.rejected) == {("smtp", 535)}
    assert pool_delta() == expected(misses=1)  # nothing pooled, nothing left checked out

    tenants.hooli.mail_options = hooli_options(strict_smtp)
    assert mailer(tenant=tenants.hooli).send_messages([message("right password")]) == 1
    assert strict_smtp.wait_for(1)[0].credential == HOOLI_CREDENTIAL


def test_a_refused_login_ends_the_half_open_session(
    tenants: Tenants, strict_smtp: FakeSMTP, settings: Any
) -> None:
    path = f"{__name__}.RecordingSMTPBackend"
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": [path]}
    RecordingSMTPBackend.instances.clear()
    tenants.hooli.mail_backend = path
    tenants.hooli.mail_options = {**hooli_options(strict_smtp), "password": "wrong-password-5"}

    with pytest.raises(smtplib.SMTPAuthenticationError):
        mailer(tenant=tenants.hooli).send_messages([message()])
    (backend,) = RecordingSMTPBackend.instances
    assert backend.close_calls == 1  # Django keeps the session in _partial_connection till then
    wait_until(lambda: strict_smtp.open_connections == 0)


def test_fail_silently_covers_an_unreachable_smtp_server(
    tenants: Tenants, pool_delta: Callable[[], PoolStats]
) -> None:
    # Like a 500 from an ESP, a server that is down is an operational error, not configuration.
    tenants.hooli.mail_options = {"host": "127.0.0.1", "port": unused_port(), "timeout": 5}
    assert mailer(tenant=tenants.hooli, fail_silently=True).send_messages([message()]) == 0
    assert pool_delta() == expected(misses=1)  # nothing opened, nothing left checked out


def test_an_unreachable_smtp_server_raises_without_fail_silently(
    tenants: Tenants, pool_delta: Callable[[], PoolStats]
) -> None:
    tenants.hooli.mail_options = {"host": "127.0.0.1", "port": unused_port(), "timeout": 5}
    with pytest.raises(ConnectionRefusedError) as excinfo:
        mailer(tenant=tenants.hooli).send_messages([message()])
    assert any("tenant 'hooli'" in note for note in excinfo.value.__notes__)
    assert pool_delta() == expected(misses=1)


def test_a_forked_child_exiting_does_not_end_the_parents_smtp_session(
    tenants: Tenants, fake_smtp: FakeSMTP, pool_delta: Callable[[], PoolStats]
) -> None:
    backend = mailer(tenant=tenants.hooli)
    backend.send_messages([message("parent before fork")])

    def child() -> dict[str, Any]:
        pool_module.clear()  # what tenantmail's atexit hook does when the child exits normally
        return {}

    run_in_fork(child)
    assert backend.send_messages([message("parent after fork")]) == 1
    assert [m.subject for m in fake_smtp.wait_for(2)] == [
        "parent before fork",
        "parent after fork",
    ]
    assert fake_smtp.connections_opened == 1
