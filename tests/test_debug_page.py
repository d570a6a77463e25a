"""DEBUG=True: the technical 500 page of a failed tenant send never shows the tenant's key.

Django's ``SafeExceptionReporterFilter`` is off when ``DEBUG`` is on, so ``sensitive_variables``
no longer hides the locals of Anymail's, ``requests``' and ``smtplib``'s frames (request params,
auth headers, the SMTP password). A real tenant request (django-tenants middleware, by host name)
sends through a real backend to a loopback server that fails; the page Django renders -- HTML and
text -- must still show the failing frames, and no canary in any form.
(``tests/test_secrets.py`` covers the DEBUG=False error report.)
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from anymail.exceptions import AnymailRequestsAPIError
from django.core.mail import EmailMessage
from django.test import Client as HttpClient

from tenantmail import mailer
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import Tenants
from tests.test_secrets import SMTP_CANARY, assert_clean, canary_tenants  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def debug_pages(schema: str) -> tuple[str, str]:
    """The technical 500 page, as HTML and as text, for /send/ on ``schema``'s host."""
    browser = HttpClient(raise_request_exception=False, HTTP_HOST=f"{schema}.localhost")
    html = browser.get("/send/")
    text = browser.get("/send/", HTTP_ACCEPT="text/plain")
    assert html.status_code == text.status_code == 500
    assert html["Content-Type"].startswith("text/html")
    assert text["Content-Type"].startswith("text/plain")
    return html.content.decode(), text.content.decode()


def esp_fails(status: int) -> Callable[[Tenants, FakeESP], None]:
    def arrange(tenants: Tenants, esp: FakeESP) -> None:
        esp.fail_next(status, count=2)  # one for each page

    return arrange


def refused(tenants: Tenants, esp: FakeESP) -> None:
    acme = tenants.acme
    acme.mail_options = {**acme.mail_options, "api_url": f"http://127.0.0.1:{closed_port()}/v3"}
    acme.confirm_mail_endpoint_change()  # moved on purpose
    acme.save()


@pytest.mark.parametrize(
    ("schema", "arrange", "shown"),
    [
        ("acme", esp_fails(500), "AnymailRequestsAPIError"),
        ("acme", esp_fails(401), "AnymailRequestsAPIError"),
        ("globex", esp_fails(500), "AnymailRequestsAPIError"),
        ("globex", esp_fails(401), "AnymailRequestsAPIError"),
        ("acme", refused, "ConnectionError"),
    ],
    ids=["mailgun-500", "mailgun-401", "postmark-500", "postmark-401", "connection-refused"],
)
def test_technical_500_page_of_a_failed_esp_send(
    canary_tenants: Tenants,  # noqa: F811 - the fixture
    fake_esp: FakeESP,
    settings: Any,
    schema: str,
    arrange: Callable[[Tenants, FakeESP], None],
    shown: str,
) -> None:
    settings.DEBUG = True
    arrange(canary_tenants, fake_esp)
    html, text = debug_pages(schema)
    # The page is real: the exception, and the frames below our send boundary, by name.
    for page in (html, text):
        assert shown in page
        assert "post_to_esp" in page
        assert "send_view" in page
    assert_clean(html, "technical 500 HTML")
    assert_clean(text, "technical 500 text")


def test_technical_500_page_of_an_smtp_auth_failure(
    canary_tenants: Tenants,  # noqa: F811 - the fixture
    settings: Any,
) -> None:
    settings.DEBUG = True
    with FakeSMTP(users={"hooli": "the-right-password"}) as strict:
        hooli = canary_tenants.hooli
        hooli.mail_options = {
            "host": strict.host,
            "port": strict.port,
            "username": "hooli",
            "password": SMTP_CANARY,
        }
        hooli.confirm_mail_endpoint_change()  # moved on purpose
        hooli.save()
        html, text = debug_pages("hooli")
    for page in (html, text):
        assert "SMTPAuthenticationError" in page
        assert "login" in page
    assert_clean(html, "technical 500 HTML")
    assert_clean(text, "technical 500 text")


def test_technical_500_page_of_a_configuration_error(
    canary_tenants: Tenants,  # noqa: F811 - the fixture
    settings: Any,
) -> None:
    settings.DEBUG = True
    acme = canary_tenants.acme
    acme.mail_options = {**acme.mail_options, "idna_encoder": "os.system"}
    acme.confirm_mail_endpoint_change()  # moved on purpose
    acme.save()
    html, text = debug_pages("acme")
    for page in (html, text):
        assert "TenantMailConfigurationError" in page
        assert "idna_encoder" in page
    assert_clean(html, "technical 500 HTML")
    assert_clean(text, "technical 500 text")


def test_an_exception_the_caller_was_handling_keeps_its_locals(
    canary_tenants: Tenants,  # noqa: F811 - the fixture
    fake_esp: FakeESP,
) -> None:
    # Sending from an except block makes the caller's exception the __context__ of ours; only
    # the frames below the send are cleared, never the caller's own.
    def callers_code() -> None:
        callers_local = "keep me"  # noqa: F841 - inspected through the traceback
        raise LookupError("the caller's own problem")

    fake_esp.fail_next(500)
    try:
        callers_code()
    except LookupError:
        with pytest.raises(AnymailRequestsAPIError) as raised:
            mailer(tenant="acme").send_messages([EmailMessage("s", "b", to=["c@example.com"])])
    context = raised.value.__context__
    assert isinstance(context, LookupError)
    assert context.__traceback__ is not None
    frame = context.__traceback__.tb_next.tb_frame  # callers_code's frame
    assert frame.f_locals["callers_local"] == "keep me"
    # ... while Anymail's own frames, below the send, hold nothing any more.
    tb = raised.value.__traceback__
    below = []
    while tb is not None:
        below.append(tb.tb_frame)
        tb = tb.tb_next
    names = [f.f_code.co_name for f in below]
    assert "post_to_esp" in names
    assert all(not f.f_locals for f in below[names.index("_deliver") + 1 :])
