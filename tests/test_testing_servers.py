"""The loopback fakes in ``tenantmail.testing``, driven by the *real* clients.

django-anymail's Mailgun/Postmark/SendGrid backends talk HTTP(S) to FakeESP and
Django's SMTP backend talks SMTP to FakeSMTP, so these tests also pin down
that the fakes answer in the shape those clients accept.
"""

from __future__ import annotations

import base64
import gc
import os
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
import requests
from django.conf import settings

# Standalone runs (no project conftest yet): a minimal configuration. Under
# pytest-django the project settings are already loaded and this is skipped.
if not settings.configured and "DJANGO_SETTINGS_MODULE" not in os.environ:
    # (No EMAIL_BACKEND: Django 6.1 deprecates it, and backends are built directly.)
    settings.configure(ANYMAIL={})
    django.setup()

from anymail.backends.mailgun import EmailBackend as MailgunBackend
from anymail.backends.postmark import EmailBackend as PostmarkBackend
from anymail.backends.sendgrid import EmailBackend as SendGridBackend
from anymail.exceptions import (
    AnymailAPIError,
    AnymailNotSupportedWarning,
    AnymailRequestsAPIError,
)
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

from tenantmail import testing
from tenantmail.testing import FakeESP, FakeSMTP, ReceivedMessage, mask

# Fake credentials with realistic shapes; each ends in a distinct suffix so a
# mix-up between tenants would show.
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxt4f2a"
POSTMARK_TOKEN = "d2b1c6f0-8a8e-4f54-9d76-0c1e5c7a1b01"
SENDGRID_KEY = "SG.fake-tenant-key.abcdefghijklmnop9z8y"

Backend = Any  # anymail backends are untyped
BackendFactory = Callable[..., Backend]


def mailgun(esp: FakeESP, key: str = MAILGUN_KEY, **options: Any) -> Backend:
    return MailgunBackend(
        alias="mg",
        api_key=key,
        sender_domain="mg.tenant-a.example",
        api_url=esp.mailgun_api_url,
        **options,
    )


def postmark(esp: FakeESP, key: str = POSTMARK_TOKEN, **options: Any) -> Backend:
    return PostmarkBackend(alias="pm", server_token=key, api_url=esp.postmark_api_url, **options)


def sendgrid(esp: FakeESP, key: str = SENDGRID_KEY, **options: Any) -> Backend:
    # anymail announces it no longer officially supports SendGrid; expected.
    with pytest.warns(AnymailNotSupportedWarning):
        return SendGridBackend(alias="sg", api_key=key, api_url=esp.sendgrid_api_url, **options)


BACKENDS: dict[str, tuple[BackendFactory, str]] = {
    "mailgun": (mailgun, MAILGUN_KEY),
    "postmark": (postmark, POSTMARK_TOKEN),
    "sendgrid": (sendgrid, SENDGRID_KEY),
}


def make_message(**kwargs: Any) -> EmailMessage:
    defaults: dict[str, Any] = {
        "subject": "Invoice 42",
        "body": "Hello",
        "from_email": "Tenant A <billing@mg.tenant-a.example>",
        "to": ["Alice <alice@example.com>"],
    }
    return EmailMessage(**(defaults | kwargs))


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll for state another thread updates (e.g. a server noticing a close)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)


@pytest.fixture
def esp() -> Iterator[FakeESP]:
    with FakeESP() as server:
        yield server


# ------------------------------------------------------------------ mask/repr


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("key-3ax6xnjp4f2a", "…4f2a"),
        ("1234567890123456", "…3456"),  # 16 characters: just long enough
        ("123456789012345", "****"),  # shorter secrets show nothing
        ("", "****"),
    ],
)
def test_mask(secret: str, shown: str) -> None:
    assert mask(secret) == shown


def test_repr_masks_the_credential() -> None:
    message = ReceivedMessage(
        "mailgun",
        MAILGUN_KEY,
        "mg.example",
        "a@x.example",
        ["b@y.example"],
        "s",
        {},
        "<id>",
        1,
        0.0,
    )
    for text in (repr(message), str(message), repr([message])):
        assert MAILGUN_KEY not in text
        assert "credential='…4f2a'" in text
        assert "sender_domain='mg.example'" in text


# ------------------------------------------------------------------ each ESP


def test_mailgun_records_what_anymail_sent(esp: FakeESP) -> None:
    message = make_message(cc=["carol@example.com"], bcc=["bob@example.com"])
    message.metadata = {"tenant": "a", "attempt": 2}  # type: ignore[attr-defined]

    sent = mailgun(esp).send_messages([message])

    assert sent == 1
    [received] = esp.messages
    assert received.esp == "mailgun"
    assert received.credential == MAILGUN_KEY
    assert received.sender_domain == "mg.tenant-a.example"
    assert received.from_email == "billing@mg.tenant-a.example"
    assert received.to == ["alice@example.com", "carol@example.com", "bob@example.com"]
    assert received.subject == "Invoice 42"
    assert received.metadata == {"tenant": "a", "attempt": "2"}
    assert received.message_id.endswith("@mg.tenant-a.example>")
    assert message.anymail_status.message_id == received.message_id  # type: ignore[attr-defined]
    assert message.anymail_status.status == {"queued"}  # type: ignore[attr-defined]


def test_mailgun_multipart_upload_with_attachment(esp: FakeESP) -> None:
    # With attachments requests switches from urlencoded to multipart/form-data.
    message = make_message(subject="Ünïcode report")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    message.metadata = {"tenant": "a"}  # type: ignore[attr-defined]

    mailgun(esp).send_messages([message])

    [received] = esp.messages
    assert received.subject == "Ünïcode report"
    assert received.metadata == {"tenant": "a"}
    assert received.to == ["alice@example.com"]


def test_postmark_records_what_anymail_sent(esp: FakeESP) -> None:
    message = make_message(to=["alice@example.com", "Bob <bob@example.com>"])
    message.metadata = {"tenant": "a"}  # type: ignore[attr-defined]

    postmark(esp).send_messages([message])

    [received] = esp.messages
    assert (received.esp, received.credential) == ("postmark", POSTMARK_TOKEN)
    assert received.sender_domain is None
    assert received.from_email == "billing@mg.tenant-a.example"
    assert received.to == ["alice@example.com", "bob@example.com"]
    assert received.metadata == {"tenant": "a"}
    status = message.anymail_status  # type: ignore[attr-defined]
    assert status.status == {"sent"}
    assert status.message_id == received.message_id


def test_postmark_batch_gives_each_recipient_its_own_message(esp: FakeESP) -> None:
    message = make_message(to=["alice@example.com", "bob@example.com"])
    message.merge_metadata = {  # type: ignore[attr-defined]
        "alice@example.com": {"user": "1"},
        "bob@example.com": {"user": "2"},
    }

    postmark(esp).send_messages([message])

    by_recipient = {m.to[0]: m for m in esp.messages}
    assert {k: m.metadata for k, m in by_recipient.items()} == {
        "alice@example.com": {"user": "1"},
        "bob@example.com": {"user": "2"},
    }
    recipients = message.anymail_status.recipients  # type: ignore[attr-defined]
    for address, received in by_recipient.items():
        assert recipients[address].message_id == received.message_id
    assert (
        by_recipient["alice@example.com"].message_id != by_recipient["bob@example.com"].message_id
    )


def test_sendgrid_records_what_anymail_sent(esp: FakeESP) -> None:
    message = make_message(cc=["carol@example.com"])
    message.metadata = {"tenant": "a", "n": 3}  # type: ignore[attr-defined]

    sendgrid(esp).send_messages([message])

    [received] = esp.messages
    assert (received.esp, received.credential) == ("sendgrid", SENDGRID_KEY)
    assert received.from_email == "billing@mg.tenant-a.example"
    assert received.to == ["alice@example.com", "carol@example.com"]
    assert received.subject == "Invoice 42"
    # anymail's own tracking id is the message id, not user metadata.
    assert received.metadata == {"tenant": "a", "n": "3"}
    assert message.anymail_status.message_id == received.message_id  # type: ignore[attr-defined]


def test_each_backend_is_told_apart_by_credential(esp: FakeESP) -> None:
    mailgun(esp, key="key-tenant-a-000000000001").send_messages([make_message()])
    mailgun(esp, key="key-tenant-b-000000000002").send_messages([make_message()])

    assert [m.credential for m in esp.messages] == [
        "key-tenant-a-000000000001",
        "key-tenant-b-000000000002",
    ]


# ------------------------------------------------------------------ auth, routing


@pytest.mark.parametrize(
    ("name", "key"),
    # (requests itself refuses a Postmark header value of only spaces.)
    [("mailgun", ""), ("postmark", ""), ("sendgrid", ""), ("mailgun", "   "), ("sendgrid", "  ")],
)
def test_missing_credential_is_401(esp: FakeESP, name: str, key: str) -> None:
    factory, _ = BACKENDS[name]

    with pytest.raises(AnymailAPIError) as caught:
        factory(esp, key=key).send_messages([make_message()])

    assert caught.value.status_code == 401
    assert esp.messages == []
    assert esp.rejected == [(name, 401)]


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_valid_credentials_restrict_accepted_keys(name: str) -> None:
    factory, good_key = BACKENDS[name]
    with FakeESP(valid_credentials=[good_key]) as esp:
        with pytest.raises(AnymailAPIError) as caught:
            factory(esp, key=good_key + "x").send_messages([make_message()])
        factory(esp).send_messages([make_message()])

    assert caught.value.status_code == 401
    assert [m.credential for m in esp.messages] == [good_key]


def test_unknown_path_is_404(esp: FakeESP) -> None:
    response = requests.post(f"{esp.base_url}mailgun/v2/nope", data={"a": "b"}, timeout=5)

    assert response.status_code == 404
    assert requests.get(esp.mailgun_api_url, timeout=5).status_code == 404
    assert esp.rejected == [("mailgun", 404), ("mailgun", 404)]


def test_registered_routes_answer_before_the_send_apis(
    esp: FakeESP, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Account/provisioning endpoints are added with testing.route(); any method, tried first.
    monkeypatch.setattr(testing, "ROUTES", [])
    seen: list[tuple[str, bytes]] = []

    @testing.route("GET", r"^/brevo/v3/corporate/(?P<id>\d+)$")
    def corporate(fake: FakeESP, match: Any, headers: Any, body: bytes, conn: int) -> Any:
        seen.append((match["id"], body))
        return testing._json_reply(200, {"id": int(match["id"])})

    response = requests.get(f"{esp.base_url}brevo/v3/corporate/42", timeout=5)
    missing = requests.post(f"{esp.base_url}brevo/v3/corporate/42", timeout=5)

    assert response.status_code == 200
    assert response.json() == {"id": 42}
    assert seen == [("42", b"")]
    assert missing.status_code == 404  # only the registered method
    assert esp.rejected == [("brevo", 404)]  # the ESP named by the path prefix


def test_malformed_json_is_400(esp: FakeESP) -> None:
    response = requests.post(
        f"{esp.postmark_api_url}email",
        data=b"{not json",
        headers={"X-Postmark-Server-Token": POSTMARK_TOKEN},
        timeout=5,
    )

    assert response.status_code == 400
    assert esp.rejected == [("postmark", 400)]


# ------------------------------------------------------------------ connections


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_open_backend_reuses_one_connection(esp: FakeESP, name: str) -> None:
    factory, _ = BACKENDS[name]
    with factory(esp) as backend:
        backend.send_messages([make_message()])
        backend.send_messages([make_message()])
        assert esp.open_connections == 1

    assert esp.connections_opened == 1
    assert len({m.connection_id for m in esp.messages}) == 1
    wait_until(lambda: esp.open_connections == 0)


def test_separate_sends_open_separate_connections(esp: FakeESP) -> None:
    backend = mailgun(esp)
    backend.send_messages([make_message()])  # not opened: one session per call
    backend.send_messages([make_message()])

    assert esp.connections_opened == 2
    assert len({m.connection_id for m in esp.messages}) == 2


def test_stop_closes_listener_and_client_connections() -> None:
    esp = FakeESP()
    esp.start()
    url = esp.mailgun_api_url
    with mailgun(esp) as backend:
        backend.send_messages([make_message()])
        assert esp.open_connections == 1

        esp.stop()

        assert esp.open_connections == 0
        with pytest.raises(AnymailRequestsAPIError):  # listener is gone too
            backend.send_messages([make_message()])
    with pytest.raises(requests.ConnectionError):
        requests.post(url, timeout=1)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("tls", [False, True])
def test_no_file_descriptors_leak(tls: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    def open_fds() -> int:
        gc.collect()  # so unrelated garbage closing sockets can't skew the count
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    with FakeESP(tls=tls) as esp:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", esp.ca_bundle_path if tls else "")
        for _ in range(3):
            with mailgun(esp) as backend:
                backend.send_messages([make_message()])
        held_open = mailgun(esp)
        held_open.open()
        held_open.send_messages([make_message()])
    held_open.close()

    assert esp.connections_opened == 4
    assert open_fds() <= before


def test_close_idle_after_drops_idle_keepalive_connections(esp: FakeESP) -> None:
    esp.close_idle_after = 0.05
    with mailgun(esp) as backend:
        backend.send_messages([make_message()])
        wait_until(lambda: esp.open_connections == 0)
        # The client notices the closed socket and transparently reconnects.
        backend.send_messages([make_message()])

    assert esp.connections_opened == 2
    assert len(esp.messages) == 2


# ------------------------------------------------------------------ faults


def test_fail_next_answers_the_status_without_recording(esp: FakeESP) -> None:
    esp.fail_next(500)
    backend = mailgun(esp)

    with pytest.raises(AnymailAPIError) as caught:
        backend.send_messages([make_message()])
    backend.send_messages([make_message()])  # the fault was used up

    assert caught.value.status_code == 500
    assert esp.rejected == [("mailgun", 500)]
    assert len(esp.messages) == 1


def test_fail_next_count_and_body(esp: FakeESP) -> None:
    esp.fail_next(429, body='{"message": "slow down"}', count=2)
    backend = postmark(esp)

    codes = []
    for _ in range(2):
        with pytest.raises(AnymailAPIError) as caught:
            backend.send_messages([make_message()])
        codes.append(caught.value.status_code)
        assert "slow down" in str(caught.value)
    backend.send_messages([make_message()])

    assert codes == [429, 429]
    assert esp.rejected == [("postmark", 429), ("postmark", 429)]
    assert len(esp.messages) == 1


def test_reset_next_drops_the_connection_without_response(esp: FakeESP) -> None:
    esp.reset_next()

    with pytest.raises(AnymailRequestsAPIError) as caught:
        sendgrid(esp).send_messages([make_message()])
    sendgrid(esp).send_messages([make_message()])

    assert caught.value.status_code is None  # no HTTP response at all
    # anymail re-raises the transport error as its own type *and* requests'.
    assert isinstance(caught.value, requests.ConnectionError)
    assert esp.rejected == [("sendgrid", 0)]
    assert len(esp.messages) == 1


def test_a_request_cut_off_mid_body_is_not_recorded(esp: FakeESP) -> None:
    # A worker SIGKILLed while writing its request: a real ESP never gets that message.
    body = b"from=a%40mg.example.com&to=b%40example.com&subject=whole"
    head = (
        "POST /mailgun/v3/mg.example.com/messages HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Basic {base64.b64encode(b'api:key-1').decode()}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", esp.port), timeout=5) as sock:
        sock.sendall(head + body[:20])  # "...&to=b%40ex": no subject yet
    with socket.create_connection(("127.0.0.1", esp.port), timeout=5) as sock:
        sock.sendall(head + body)
        assert sock.recv(100).startswith(b"HTTP/1.1 200")

    assert [m.subject for m in esp.wait_for(1)] == ["whole"]
    time.sleep(0.2)  # the cut-off one was handled first; nothing more arrives
    assert [m.subject for m in esp.messages] == ["whole"]


def test_reset_next_is_a_tcp_reset_not_a_clean_close(esp: FakeESP) -> None:
    esp.reset_next()
    request = b"POST /mailgun/v3/mg.example/messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n"

    with socket.create_connection(("127.0.0.1", esp.port), timeout=5) as client:
        client.sendall(request)
        # A clean close would read as b""; an RST surfaces as an error.
        with pytest.raises(ConnectionResetError):
            client.recv(1024)


def test_delay_makes_a_short_client_timeout_fire(esp: FakeESP) -> None:
    esp.delay = 0.3

    started = time.monotonic()
    with pytest.raises(AnymailRequestsAPIError) as caught:
        mailgun(esp, timeout=0.05).send_messages([make_message()])

    assert isinstance(caught.value, requests.Timeout)
    assert time.monotonic() - started < 0.3


def test_clear_resets_messages_counters_and_pending_faults(esp: FakeESP) -> None:
    mailgun(esp).send_messages([make_message()])
    with pytest.raises(AnymailAPIError):
        mailgun(esp, key="").send_messages([make_message()])
    esp.fail_next(500)
    assert (len(esp.messages), len(esp.rejected), esp.connections_opened) == (1, 1, 2)

    esp.clear()

    assert (esp.messages, esp.rejected, esp.connections_opened) == ([], [], 0)
    mailgun(esp).send_messages([make_message()])  # no pending failure left
    assert len(esp.messages) == 1


def test_wait_for(esp: FakeESP) -> None:
    mailgun(esp).send_messages([make_message()])

    assert len(esp.wait_for(1)) == 1
    with pytest.raises(TimeoutError, match="expected 2 message"):
        esp.wait_for(2, timeout=0.05)


# ------------------------------------------------------------------ TLS


def test_tls_with_the_generated_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeESP(tls=True) as esp:
        ca_path = Path(esp.ca_bundle_path)
        assert esp.mailgun_api_url.startswith("https://127.0.0.1:")
        assert "BEGIN CERTIFICATE" in ca_path.read_text()

        # requests' default trust store does not know the throwaway CA.
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(AnymailRequestsAPIError) as caught:
            mailgun(esp).send_messages([make_message()])
        assert isinstance(caught.value, requests.exceptions.SSLError)

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_path))
        with postmark(esp) as backend:
            backend.send_messages([make_message()])
            backend.send_messages([make_message()])
        assert requests.post(esp.base_url, verify=str(ca_path), timeout=5).status_code == 404

    assert [m.credential for m in esp.messages] == [POSTMARK_TOKEN, POSTMARK_TOKEN]
    assert len({m.connection_id for m in esp.messages}) == 1
    assert not ca_path.exists()  # the throwaway CA is cleaned up on stop


def test_ca_bundle_path_needs_tls(esp: FakeESP) -> None:
    with pytest.raises(RuntimeError, match="tls=True"):
        _ = esp.ca_bundle_path


# ------------------------------------------------------------------ SMTP


def smtp_backend(server: FakeSMTP, username: str = "", password: str = "") -> Any:
    return SMTPBackend(
        alias="t", host=server.host, port=server.port, username=username, password=password
    )


def test_smtp_records_auth_credential_envelope_and_headers() -> None:
    with FakeSMTP() as server:
        assert server.connections_opened == 0  # aiosmtpd's startup probe is not counted
        message = make_message(
            cc=["carol@example.com"],
            bcc=["bob@example.com"],
            headers={"Message-ID": "<invoice-42@tenant-a.example>"},
        )
        with smtp_backend(server, "tenant-a", "s3cret-password") as backend:
            backend.send_messages([message])
            backend.send_messages([make_message(subject="Second")])
        messages = server.wait_for(2)

        wait_until(lambda: server.open_connections == 0)

    first = messages[0]
    assert first.esp == "smtp"
    assert first.credential == "tenant-a:s3cret-password"
    assert first.from_email == "billing@mg.tenant-a.example"
    assert first.to == ["alice@example.com", "carol@example.com", "bob@example.com"]
    assert first.subject == "Invoice 42"
    assert first.metadata == {}
    assert first.message_id == "<invoice-42@tenant-a.example>"
    assert messages[1].subject == "Second"
    assert server.connections_opened == 1
    assert messages[0].connection_id == messages[1].connection_id
    assert "s3cret-password" not in repr(first)


def test_smtp_without_auth_records_empty_credential() -> None:
    with FakeSMTP() as server:
        smtp_backend(server).send_messages([make_message()])
        [received] = server.wait_for(1)

    assert received.credential == ""
    assert "credential=''" in repr(received)


def test_smtp_rejects_unknown_users() -> None:
    with FakeSMTP(users={"tenant-a": "right"}) as server:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp_backend(server, "tenant-a", "wrong").send_messages([make_message()])
        smtp_backend(server, "tenant-a", "right").send_messages([make_message()])
        server.wait_for(1)

    assert [m.credential for m in server.messages] == ["tenant-a:right"]
    # smtplib tries each advertised mechanism (PLAIN, then LOGIN) before giving up.
    assert server.rejected == [("smtp", 535), ("smtp", 535)]
    assert server.connections_opened == 2
    server.clear()
    assert (server.messages, server.rejected, server.connections_opened) == ([], [], 0)
