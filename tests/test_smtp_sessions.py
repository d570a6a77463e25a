"""SMTP servers that are hard on kept-alive sessions (issue 8, item 7).

Django's own SMTP backend opens a session per send, so a server that hangs up after each message,
or after a second of idleness, never troubles it; a pooled session must cope just as well. A
message that fails on a *reused* session before the server acknowledged MAIL FROM is sent again
on a fresh one; anything the server might have accepted is never sent twice.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator

import pytest
from django.core.mail import EmailMessage

from tenantmail import mailer
from tenantmail.pool import get_pool
from tenantmail.smtp import EmailBackend as TenantmailSMTPBackend
from tenantmail.testing import FakeSMTP
from tests.conftest import HOOLI_PASSWORD, HOOLI_USER, Tenants
from tests.test_pool import wait_until

CREDENTIAL = f"{HOOLI_USER}:{HOOLI_PASSWORD}"


def message(subject: str) -> EmailMessage:
    return EmailMessage(subject, "body", "hooli@example.com", ["to@example.com"])


def point_hooli_at(tenants: Tenants, server: FakeSMTP) -> None:
    tenants.hooli.mail_options = {
        "host": server.host,
        "port": server.port,
        "username": HOOLI_USER,
        "password": HOOLI_PASSWORD,
        "timeout": 5,
    }
    tenants.hooli.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.hooli.save()


@pytest.fixture
def closing_server() -> Iterator[FakeSMTP]:
    with FakeSMTP(close_after_each=True) as server:
        yield server


@pytest.fixture
def impatient_server() -> Iterator[FakeSMTP]:
    with FakeSMTP(idle_timeout=0.2) as server:
        yield server


def pooled_backend() -> TenantmailSMTPBackend:
    pool = get_pool()
    (conn,) = [*pool._lru.values(), *pool._parked.values()]  # idle, or parked after its send
    assert isinstance(conn.backend, TenantmailSMTPBackend)
    return conn.backend


def test_a_server_that_hangs_up_after_each_message_gets_every_message(
    tenants: Tenants, closing_server: FakeSMTP
) -> None:
    point_hooli_at(tenants, closing_server)
    for i in range(3):
        assert mailer(tenant="hooli").send_messages([message(f"m{i}")]) == 1
    received = closing_server.wait_for(3)
    assert [m.subject for m in received] == ["m0", "m1", "m2"]
    assert {m.credential for m in received} == {CREDENTIAL}
    assert closing_server.connections_opened == 3


def test_a_batch_to_a_server_that_hangs_up_after_each_message_is_delivered_whole(
    tenants: Tenants, closing_server: FakeSMTP
) -> None:
    point_hooli_at(tenants, closing_server)
    batch = [message(f"b{i}") for i in range(3)]
    assert mailer(tenant="hooli").send_messages(batch) == 3
    assert [m.subject for m in closing_server.wait_for(3)] == ["b0", "b1", "b2"]


def test_a_server_that_idles_out_in_under_a_second_gets_every_message(
    tenants: Tenants, impatient_server: FakeSMTP
) -> None:
    point_hooli_at(tenants, impatient_server)
    mailer(tenant="hooli").send_messages([message("before")])
    wait_until(lambda: impatient_server.open_connections == 0)  # the server timed it out
    assert mailer(tenant="hooli").send_messages([message("after")]) == 1
    assert [m.subject for m in impatient_server.wait_for(2)] == ["before", "after"]
    assert impatient_server.connections_opened == 2


def test_a_421_goodbye_to_mail_from_on_a_reused_session_is_retried_once_on_a_fresh_one(
    tenants: Tenants, fake_smtp: FakeSMTP
) -> None:
    point_hooli_at(tenants, fake_smtp)
    mailer(tenant="hooli").send_messages([message("first")])
    fake_smtp.goodbye_at_next_mail()  # the poll sees nothing: only MAIL FROM reveals it
    assert mailer(tenant="hooli").send_messages([message("second")]) == 1
    assert [m.subject for m in fake_smtp.wait_for(2)] == ["first", "second"]
    assert fake_smtp.connections_opened == 2
    assert pooled_backend().retries == 1


def test_a_421_on_a_fresh_session_is_not_retried(tenants: Tenants, fake_smtp: FakeSMTP) -> None:
    point_hooli_at(tenants, fake_smtp)
    fake_smtp.goodbye_at_next_mail()
    with pytest.raises(smtplib.SMTPSenderRefused) as raised:
        mailer(tenant="hooli").send_messages([message("refused")])
    assert raised.value.smtp_code == 421
    assert fake_smtp.messages == []
    assert fake_smtp.connections_opened == 1


def test_a_session_lost_after_data_is_never_retried(tenants: Tenants, fake_smtp: FakeSMTP) -> None:
    point_hooli_at(tenants, fake_smtp)
    mailer(tenant="hooli").send_messages([message("first")])
    fake_smtp.hang_up_after_data()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        mailer(tenant="hooli").send_messages([message("maybe accepted")])
    time.sleep(0.1)  # a retry would arrive now
    assert [m.subject for m in fake_smtp.messages] == ["first", "maybe accepted"]
    assert fake_smtp.connections_opened == 1


def test_a_session_lost_after_data_in_a_batch_stops_the_batch(
    tenants: Tenants, fake_smtp: FakeSMTP
) -> None:
    point_hooli_at(tenants, fake_smtp)
    mailer(tenant="hooli").send_messages([message("warm")])
    fake_smtp.hang_up_after_data()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        mailer(tenant="hooli").send_messages([message("maybe"), message("never sent")])
    time.sleep(0.1)
    assert [m.subject for m in fake_smtp.messages] == ["warm", "maybe"]
