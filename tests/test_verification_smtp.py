"""Verification of SMTP tenants against a real SMTP server (aiosmtpd): plain, STARTTLS and implicit
TLS, each stage failing in turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from django.contrib.auth.models import User

from tenantmail import pool
from tenantmail.masking import mask
from tenantmail.testing import FakeSMTP
from tenantmail.verification import verify
from tests.conftest import HOOLI_PASSWORD, HOOLI_USER, Tenants
from tests.tenants_app.models import Client
from tests.test_verification import STAFF, closed_port, failed_at, move, staff, statuses

pytestmark = pytest.mark.django_db
__all__ = ["staff"]  # the fixture, re-used

HOOLI_FROM = "it@hooli.example"


@pytest.fixture
def hooli(tenants: Tenants) -> Client:
    tenants.hooli.mail_defaults = {"from_email": HOOLI_FROM}
    tenants.hooli.save()
    return tenants.hooli


@pytest.fixture
def tls_server(request: pytest.FixtureRequest) -> Iterator[FakeSMTP]:
    mode: Literal["starttls", "implicit"] = request.param
    with FakeSMTP({HOOLI_USER: HOOLI_PASSWORD}, tls=mode) as server:
        yield server
        pool.clear()  # the test message's pooled TLS session, before the server stops


def test_an_smtp_tenant_passes_and_the_test_message_is_delivered_to_the_staff_member(
    hooli: Client, fake_smtp: FakeSMTP, staff: User
) -> None:
    report = verify(hooli, send_to=STAFF)
    assert report.ok, report.line()
    assert statuses(report) == {
        "resolve": "ok",
        "connect": "ok",
        "tls": "skipped",  # use_tls/use_ssl off: said so
        "authenticate": "ok",
        "sender": "ok",
        "test_message": "ok",
    }
    assert report.stage("authenticate").detail == (
        f"user {HOOLI_USER} with password{mask(HOOLI_PASSWORD)} accepted"
    )
    assert report.stage("sender").detail == f"MAIL FROM:<{HOOLI_FROM}> accepted"
    [sent] = fake_smtp.messages  # the MAIL FROM probe was reset: only the test message arrived
    assert (sent.to, sent.from_email) == ([STAFF], HOOLI_FROM)
    assert sent.credential == f"{HOOLI_USER}:{HOOLI_PASSWORD}"


@pytest.mark.parametrize("tls_server", ["starttls", "implicit"], indirect=True)
def test_tls_as_configured_with_a_trusted_certificate(
    hooli: Client, tls_server: FakeSMTP, staff: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_server.ca_bundle_path is not None
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.ca_bundle_path)
    implicit = tls_server.tls == "implicit"
    move(hooli, port=tls_server.port, use_tls=not implicit, use_ssl=implicit)
    report = verify(hooli, send_to=STAFF)
    assert report.ok, report.line()
    kind = "implicit TLS" if implicit else "STARTTLS"
    assert report.stage("tls").detail == f"{kind}, certificate valid for 127.0.0.1"
    assert [m.to for m in tls_server.messages] == [[STAFF]]


@pytest.mark.parametrize("tls_server", ["starttls", "implicit"], indirect=True)
def test_an_untrusted_certificate_fails_at_tls(
    hooli: Client, tls_server: FakeSMTP, staff: User
) -> None:
    implicit = tls_server.tls == "implicit"
    move(hooli, port=tls_server.port, use_tls=not implicit, use_ssl=implicit)
    reason = failed_at(verify(hooli, send_to=STAFF), "tls")
    assert reason.startswith(
        f"hooli: TLS failed at 127.0.0.1:{tls_server.port}: the certificate is not valid for "
        "127.0.0.1 ("
    )
    assert tls_server.messages == []


def test_starttls_configured_but_not_offered_fails_at_tls(
    hooli: Client, fake_smtp: FakeSMTP
) -> None:
    move(hooli, use_tls=True)
    reason = failed_at(verify(hooli), "tls")
    assert reason == (
        f"hooli: the SMTP server 127.0.0.1:{fake_smtp.port} does not offer STARTTLS, but use_tls "
        "is on"
    )


def test_a_closed_port_fails_at_connect(hooli: Client) -> None:
    port = closed_port()
    move(hooli, port=port)
    assert failed_at(verify(hooli), "connect") == (
        f"hooli: cannot connect to 127.0.0.1:{port}: connection refused"
    )


def test_a_wrong_password_fails_at_authenticate_masked(hooli: Client, staff: User) -> None:
    with FakeSMTP({HOOLI_USER: "another-password-55555"}) as server:
        move(hooli, port=server.port)
        report = verify(hooli, send_to=STAFF)
        assert failed_at(report, "authenticate") == (
            f"hooli: authentication failed at the SMTP server 127.0.0.1:{server.port} (535) for "
            f"user {HOOLI_USER} with password{mask(HOOLI_PASSWORD)}"
        )
        assert HOOLI_PASSWORD not in report.line()
        assert server.messages == []


def test_a_refused_sender_fails_at_sender(hooli: Client, fake_smtp: FakeSMTP, staff: User) -> None:
    fake_smtp.refused_senders.add(HOOLI_FROM)
    try:
        reason = failed_at(verify(hooli, send_to=STAFF), "sender")
    finally:
        fake_smtp.refused_senders.clear()
    assert reason == (
        f"hooli: the SMTP server 127.0.0.1:{fake_smtp.port} refused MAIL FROM:<{HOOLI_FROM}> (550)"
    )
    assert fake_smtp.messages == []


def test_a_server_refusing_the_test_message_fails_at_test_message(
    hooli: Client, staff: User
) -> None:
    with FakeSMTP({HOOLI_USER: HOOLI_PASSWORD}) as server:
        move(hooli, port=server.port)
        original = server.handle_MAIL
        calls = {"n": 0}

        async def second_mail_refused(*args: Any) -> str:
            calls["n"] += 1
            if calls["n"] >= 2:  # the probe's MAIL FROM is the first
                return "451 4.3.0 Try again later"
            return await original(*args)

        server.handle_MAIL = second_mail_refused  # type: ignore[method-assign]
        reason = failed_at(verify(hooli, send_to=STAFF), "test_message")
    assert reason == "hooli: the test message was refused: the SMTP server answered 451"
