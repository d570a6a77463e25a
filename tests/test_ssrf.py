"""A tenant-chosen endpoint cannot turn the platform against its own network (issue 8, item 7).

A tenant who may edit its mail settings chooses where the platform sends requests: an ESP
``api_url``, an SMTP host. Redirects from such an endpoint are not followed, what it answers never
reaches an error message a tenant can see, and ``TENANTMAIL["BLOCK_PRIVATE_ENDPOINTS"]`` refuses
loopback, private and link-local destinations, checked on the address actually connected to.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import smtplib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from anymail.exceptions import AnymailAPIError
from django.core import mail
from django.core.mail import EmailMessage

from tenantmail import mailer
from tenantmail.config import MailConfig
from tenantmail.endpoints import (
    BlockedEndpointError,
    GuardedAdapter,
    destination_check,
    is_public_address,
)
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.smtp import peer_hung_up
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import ACME_KEY, HOOLI_PASSWORD, PLATFORM_KEY, Tenants

CANARY = "internal-service-canary-7f3a"


@pytest.fixture
def internal() -> Iterator[FakeESP]:
    """Stands for a service on the platform's internal network."""
    with FakeESP() as server:
        yield server


def message() -> EmailMessage:
    return EmailMessage("hi", "body", "from@example.com", ["to@example.com"])


def block_private(settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "BLOCK_PRIVATE_ENDPOINTS": True}


# -- redirects ------------------------------------------------------------------------------------


def test_a_tenant_endpoint_redirecting_to_an_internal_address_is_not_followed(
    tenants: Tenants, fake_esp: FakeESP, internal: FakeESP
) -> None:
    fake_esp.redirect_next(f"{internal.base_url}latest/meta-data/iam")
    with pytest.raises(AnymailAPIError) as raised:
        mailer(tenant="acme").send_messages([message()])
    assert internal.connections_opened == 0
    assert fake_esp.rejected == [("mailgun", 302)]
    assert internal.base_url not in str(raised.value)


def test_redirect_refusal_applies_to_every_tenant_esp(
    tenants: Tenants, fake_esp: FakeESP, internal: FakeESP
) -> None:
    fake_esp.redirect_next(f"{internal.base_url}x", status=307)
    with pytest.raises(AnymailAPIError):
        mailer(tenant="globex").send_messages([message()])
    assert internal.connections_opened == 0


# -- response bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "status", "body"),
    [
        ("acme", 500, f'{{"message": "{CANARY}"}}'),
        ("acme", 400, f"<html>{CANARY}</html>"),
        ("globex", 422, f'{{"ErrorCode": 300, "Message": "{CANARY}"}}'),
    ],
)
def test_a_tenant_endpoints_answer_never_reaches_the_error_or_the_log(
    tenants: Tenants,
    fake_esp: FakeESP,
    caplog: pytest.LogCaptureFixture,
    tenant: str,
    status: int,
    body: str,
) -> None:
    fake_esp.fail_next(status, body)
    with pytest.raises(AnymailAPIError) as raised:
        mailer(tenant=tenant).send_messages([message()])
    error = raised.value
    assert CANARY not in str(error)
    assert str(status) in str(error)
    assert CANARY not in "\n".join(getattr(error, "__notes__", []))
    pickle.dumps(error.describe_response)  # still picklable (Celery, caches)

    caplog.set_level(logging.DEBUG)
    fake_esp.fail_next(status, body)
    assert mailer(tenant=tenant, fail_silently=True).send_messages([message()]) == 0
    assert CANARY not in caplog.text


def test_the_platforms_own_endpoint_errors_still_quote_the_answer(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    # Not a tenant-chosen host: plain Anymail behaviour, body and all.
    fake_esp.fail_next(500, f'{{"message": "{CANARY}"}}')
    with pytest.raises(AnymailAPIError, match=CANARY):
        mailer(tenant="initech").send_messages([message()])


# -- private destinations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104  (an address to classify, not to bind)
        "224.0.0.1",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_non_public_addresses_are_recognised(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_blocking_refuses_a_tenant_esp_on_a_loopback_address_before_sending_anything(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, host: str
) -> None:
    block_private(settings)
    tenants.acme.mail_options = {
        **tenants.acme.mail_options,
        "api_url": fake_esp.mailgun_api_url.replace("127.0.0.1", host),
    }
    tenants.acme.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.acme.save()
    for fail_silently in (False, True):
        with pytest.raises(BlockedEndpointError) as raised:
            mailer(tenant="acme", fail_silently=fail_silently).send_messages([message()])
        error = raised.value
        assert isinstance(error, TenantMailConfigurationError)
        assert (error.tenant, error.setting) == ("acme", "mail_options")
        assert "127.0.0.1" not in str(error)
        assert ACME_KEY not in str(error)
    assert fake_esp.messages == []
    assert fake_esp.rejected == []  # not one request: the key never left


def test_blocking_refuses_a_tenant_smtp_host_on_a_loopback_address_before_login(
    tenants: Tenants, fake_smtp: FakeSMTP, settings: Any
) -> None:
    block_private(settings)
    with pytest.raises(BlockedEndpointError) as raised:
        mailer(tenant="hooli").send_messages([message()])
    assert HOOLI_PASSWORD not in str(raised.value)
    assert fake_smtp.messages == []
    assert fake_smtp.rejected == []


def test_blocking_leaves_the_platforms_own_endpoints_alone(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    block_private(settings)
    assert mailer(tenant="initech").send_messages([message()]) == 1  # platform on loopback
    assert [m.credential for m in fake_esp.wait_for(1)] == [PLATFORM_KEY]


def test_blocking_is_off_by_default(tenants: Tenants, fake_esp: FakeESP) -> None:
    # Loopback and private relays are legitimate for many platforms (a local MTA, a VPC relay).
    assert mailer(tenant="acme").send_messages([message()]) == 1


def test_the_guard_lets_allowed_addresses_through(fake_esp: FakeESP) -> None:
    seen: list[str] = []
    with requests.Session() as session:
        session.mount("http://", GuardedAdapter(seen.append))
        response = session.post(f"{fake_esp.base_url}nowhere", timeout=5)
    assert response.status_code == 404
    assert seen == ["127.0.0.1"]  # checked once, on the address actually connected to


def test_a_public_destination_passes_the_check() -> None:
    config = MailConfig(backend="x", options={}, tenant="acme", own_account=True)
    destination_check(config)("8.8.8.8")  # no error
    with pytest.raises(BlockedEndpointError):
        destination_check(config)("10.0.0.8")


def test_peer_hung_up_for_a_session_smtplib_already_closed() -> None:
    assert peer_hung_up(smtplib.SMTP())


def test_a_tenant_backend_without_a_network_endpoint_is_built_unchanged(
    tenants: Tenants, settings: Any
) -> None:
    block_private(settings)
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["anymail.backends.test.EmailBackend"],
    }
    tenants.acme.mail_backend = "anymail.backends.test.EmailBackend"
    tenants.acme.mail_options = {}
    tenants.acme.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.acme.save()
    assert mailer(tenant="acme").send_messages([message()]) == 1
    assert len(mail.outbox) == 1


def test_blocking_checks_an_smtp_ssl_host_before_the_tls_handshake(
    tenants: Tenants, fake_smtp: FakeSMTP, settings: Any
) -> None:
    # fake_smtp speaks no TLS: a handshake first would fail with an SSL error instead.
    block_private(settings)
    tenants.hooli.mail_options = {**tenants.hooli.mail_options, "use_ssl": True}
    tenants.hooli.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.hooli.save()
    with pytest.raises(BlockedEndpointError):
        mailer(tenant="hooli").send_messages([message()])
    assert fake_smtp.messages == []


class ScriptedServer:
    """A loopback TCP service answering each line with a fixed reply: not an SMTP server,
    but what a tenant's SMTP ``host``/``port`` may point at (Redis, an internal HTTP API)."""

    def __init__(self, banner: bytes, replies: dict[bytes, bytes]) -> None:
        self.banner, self.replies = banner, replies
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn, conn.makefile("rb") as lines:
                conn.sendall(self.banner)
                for line in lines:
                    verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
                    conn.sendall(self.replies.get(verb, b"250 ok\r\n"))
                    if verb == b"QUIT":
                        return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def point_hooli_at_port(tenants: Tenants, port: int) -> None:
    tenants.hooli.mail_options = {"host": "127.0.0.1", "port": port, "timeout": 5}
    tenants.hooli.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.hooli.save()


def test_what_a_non_smtp_service_answers_never_reaches_the_error(tenants: Tenants) -> None:
    server = ScriptedServer(f"-ERR {CANARY}\r\n".encode(), {})
    try:
        point_hooli_at_port(tenants, server.port)
        with pytest.raises(smtplib.SMTPConnectError) as raised:
            mailer(tenant="hooli").send_messages([message()])
    finally:
        server.close()
    assert CANARY not in str(raised.value)
    assert raised.value.smtp_code == -1


def test_a_non_smtp_answer_to_rcpt_never_reaches_the_error(tenants: Tenants) -> None:
    server = ScriptedServer(b"220 relay\r\n", {b"RCPT": f"HTTP/1.1 400 {CANARY}\r\n".encode()})
    try:
        point_hooli_at_port(tenants, server.port)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
            mailer(tenant="hooli").send_messages([message()])
    finally:
        server.close()
    assert CANARY not in str(raised.value)


def test_a_real_smtp_reply_from_a_tenant_host_is_kept(tenants: Tenants) -> None:
    server = ScriptedServer(b"220 relay\r\n", {b"MAIL": b"550 5.7.1 sender not allowed\r\n"})
    try:
        point_hooli_at_port(tenants, server.port)
        with pytest.raises(smtplib.SMTPSenderRefused, match="sender not allowed"):
            mailer(tenant="hooli").send_messages([message()])
    finally:
        server.close()


def test_blocking_refuses_a_tenant_chosen_ses_endpoint(tenants: Any, settings: Any) -> None:
    # Review finding: boto3 connects past the socket check, so BLOCK_PRIVATE_ENDPOINTS did
    # nothing for an SES tenant's client_params.endpoint_url.
    from tenantmail.config import resolve
    from tenantmail.exceptions import TenantMailConfigurationError
    from tenantmail.tenancy import current_tenant
    from tests.test_isolation import tenant_session

    block_private(settings)
    initech = tenants.initech
    initech.mail_backend = "amazon_ses"
    initech.mail_options = {
        "session_params": tenant_session(),
        "client_params": {"endpoint_url": "http://169.254.169.254/"},
    }
    initech.save()
    with pytest.raises(TenantMailConfigurationError, match="endpoint_url") as caught:
        resolve(current_tenant(initech))
    assert "169.254" not in str(caught.value)
