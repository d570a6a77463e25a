"""Pickling a sent message or a send error never writes the tenant's credential.

Celery with the pickle serializer, caches and retry queues pickle what a send hands back:
``message.anymail_status.esp_response`` (a ``requests`` response that keeps its prepared request,
``Authorization`` header included) and Anymail's errors (``.response``, ``.request``,
``.backend`` holding the key, ``.payload`` -- Mandrill's body carries the key). Each ESP here
authenticates a different way: Mailgun HTTP Basic (base64), Postmark a header, SendGrid a bearer
token, Mandrill a JSON body field.
"""

from __future__ import annotations

import base64
import pickle
import socket
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError, AnymailRequestsAPIError
from django.core.mail import EmailMessage
from requests import Response

from tenantmail import mailer
from tenantmail.testing import FakeESP
from tests.conftest import Tenants
from tests.test_pool import wait_until

pytestmark = [
    pytest.mark.django_db,
    # Anymail warns that SendGrid is no longer officially supported; its auth is what matters.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

CANARY = "CANARY-key-5d41402abc4b2a76b9719d911017c592"

#: ESP -> (backend, options for the fake ESP's endpoint, credential option name).
ESPS: dict[str, tuple[str, str]] = {
    "mailgun": ("mailgun", "api_key"),
    "postmark": ("postmark", "server_token"),
    "sendgrid": ("sendgrid", "api_key"),
}


def leaked_forms() -> list[bytes]:
    forms = [CANARY, base64.b64encode(f"api:{CANARY}".encode()).decode()]  # Mailgun's Basic
    return [form.encode() for form in forms]


def assert_pickles_clean(obj: object, what: str) -> bytes:
    data = pickle.dumps(obj)
    for form in leaked_forms():
        assert form not in data, f"pickled {what} holds the credential"
    return data


def api_url(esp: FakeESP, name: str) -> str:
    return str(getattr(esp, f"{name}_api_url"))


@pytest.fixture(params=sorted(ESPS))
def esp_tenant(request: pytest.FixtureRequest, tenants: Tenants, fake_esp: FakeESP) -> str:
    """acme on the given ESP, with the canary as its credential."""
    backend, credential = ESPS[request.param]
    acme = tenants.acme
    acme.mail_backend = backend
    acme.mail_options = {credential: CANARY, "api_url": api_url(fake_esp, request.param)}
    if backend == "mailgun":
        acme.mail_options["sender_domain"] = "mg.acme.example"
    acme.confirm_mail_endpoint_change()  # moved on purpose
    acme.save()
    return str(request.param)


def message() -> EmailMessage:
    return EmailMessage("s", "body", to=["customer@example.com"])


def test_sent_message_pickles_without_the_credential(esp_tenant: str, fake_esp: FakeESP) -> None:
    msg = message()
    assert mailer(tenant="acme").send_messages([msg]) == 1
    (received,) = fake_esp.wait_for(1)
    assert received.credential == CANARY  # the key really was used on the wire
    assert_pickles_clean(msg, "message")
    assert_pickles_clean(msg.anymail_status, "anymail_status")  # type: ignore[attr-defined]

    # What people read stays: status, ids, the response's status, headers and body, and the
    # request's method and URL.
    status = pickle.loads(pickle.dumps(msg)).anymail_status  # noqa: S301 - our own bytes
    assert status.status in ({"queued"}, {"sent"})
    assert status.message_id
    response = status.esp_response
    assert isinstance(response, Response)
    assert 200 <= response.status_code < 300
    assert response.headers
    assert response.request.method == "POST"
    assert response.request.url.startswith(fake_esp.base_url)
    assert dict(response.request.headers) == {}
    assert response.request.body is None


@pytest.mark.parametrize("status", [400, 401, 500])
def test_send_error_pickles_without_the_credential(
    esp_tenant: str, fake_esp: FakeESP, status: int
) -> None:
    msg = message()
    fake_esp.fail_next(status, body=f'{{"message": "failure {status}"}}')
    with pytest.raises(AnymailRequestsAPIError) as raised:
        mailer(tenant="acme").send_messages([msg])
    error = raised.value
    assert_pickles_clean(error, "error")
    assert_pickles_clean(msg, "message")
    # Still a useful error, before and after a round trip.
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    for err in (error, copy):
        assert err.status_code == status
        assert err.response.status_code == status
        # A tenant-chosen api_url: the status is kept, its body withheld (see test_ssrf).
        assert f"response {status}" in str(err)
        assert "withheld" in str(err)
        assert err.backend is None
        assert err.payload is None
    assert error.email_message is msg
    assert error.esp_name


def test_connection_refused_error_pickles_without_the_credential(tenants: Tenants) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    acme = tenants.acme
    acme.mail_backend = "postmark"
    acme.mail_options = {"server_token": CANARY, "api_url": f"http://127.0.0.1:{port}/"}
    acme.confirm_mail_endpoint_change()  # moved on purpose
    acme.save()
    with pytest.raises(AnymailRequestsAPIError) as raised:
        mailer(tenant="acme").send_messages([message()])
    # Anymail raises a class it makes on the fly here, which no pickler can find by name; what
    # would be pickled is its state, and the requests error it was raised from.
    assert_pickles_clean(vars(raised.value), "error state")
    assert (raised.value.backend, raised.value.payload) == (None, None)
    cause: Any = raised.value.__cause__
    assert cause is not None
    assert_pickles_clean(cause, "the requests error it was raised from")
    assert dict(cause.request.headers) == {}


def test_key_in_the_request_body_is_scrubbed_too(tenants: Tenants, fake_esp: FakeESP) -> None:
    # Mandrill sends its key in the JSON body; the fake ESP answers its path with a 404.
    acme = tenants.acme
    acme.mail_backend = "mandrill"
    acme.mail_options = {"api_key": CANARY, "api_url": f"{fake_esp.base_url}mandrill/"}
    acme.confirm_mail_endpoint_change()  # moved on purpose
    acme.save()
    msg = message()
    with pytest.raises(AnymailAPIError) as raised:
        mailer(tenant="acme").send_messages([msg])
    assert raised.value.status_code == 404
    assert_pickles_clean(raised.value, "error")
    assert_pickles_clean(msg, "message")


def test_credentials_in_the_endpoint_url_are_scrubbed(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = tenants.acme
    acme.mail_backend = "postmark"
    url = fake_esp.postmark_api_url.replace("://", f"://user:{CANARY}@") + f"?token={CANARY}"
    acme.mail_options = {"server_token": "pm-token", "api_url": url}
    acme.confirm_mail_endpoint_change()  # moved on purpose
    acme.save()
    msg = message()
    mailer(tenant="acme").send_messages([msg])
    assert_pickles_clean(msg, "message")
    response = msg.anymail_status.esp_response  # type: ignore[attr-defined]
    assert response.url.startswith(fake_esp.base_url)
    assert "?" not in response.request.url


def test_a_kept_error_does_not_keep_the_discarded_connection_open(
    esp_tenant: str, fake_esp: FakeESP
) -> None:
    # urllib3 closes a pool's sockets only once the pool is garbage; an error held somewhere
    # (a log record, a retry queue) must not hold the discarded backend's socket open.
    fake_esp.fail_next(500)
    with pytest.raises(AnymailRequestsAPIError) as raised:
        mailer(tenant="acme").send_messages([message()])
    kept = [raised.value]
    wait_until(lambda: fake_esp.open_connections == 0)
    assert "response 500" in str(kept[0])  # still a useful error (the tenant's body withheld)
    assert kept[0].response.status_code == 500
