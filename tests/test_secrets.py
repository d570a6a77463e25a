"""Secret canaries: a tenant's credential never shows up where a person or a log can see it.

Tenants get unique canary secrets; then every path is driven -- successful sends, ESP errors,
configuration errors, repr/str, DEBUG logging, management command and system-check output, form
HTML, and Django's error report (text and HTML, as AdminEmailHandler would mail it) for an
exception raised inside the send path -- and no canary may appear, in clear or base64-encoded
(as in an HTTP Basic ``Authorization`` header).
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from django import forms
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.db import connection
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from tenantmail import mailer, signals
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import Tenants, acme_options
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

MAILGUN_CANARY = "key-CANARY-mailgun-9f86d081884c7d65"
POSTMARK_CANARY = "pm-CANARY-postmark-2c26b46b68ffc68f"
SMTP_CANARY = "smtp-CANARY-password-fcde2b2edba56bf4"
CANARIES = (MAILGUN_CANARY, POSTMARK_CANARY, SMTP_CANARY)


def forms_of(secret: str) -> list[str]:
    """The secret, and the encodings it travels in on the wire."""
    return [
        secret,
        base64.b64encode(f"api:{secret}".encode()).decode(),  # Mailgun's Basic auth
        base64.b64encode(f"\0hooli\0{secret}".encode()).decode(),  # SMTP AUTH PLAIN
        base64.b64encode(secret.encode()).decode(),  # SMTP AUTH LOGIN
    ]


def assert_clean(text: str, where: str) -> None:
    for secret in CANARIES:
        for form in forms_of(secret):
            assert form not in text, f"{where} leaks a credential"


@pytest.fixture
def canary_tenants(tenants: Tenants, fake_esp: FakeESP, fake_smtp: FakeSMTP) -> Tenants:
    tenants.acme.mail_options = acme_options(fake_esp, api_key=MAILGUN_CANARY)
    tenants.acme.save()
    tenants.globex.mail_options = {
        "server_token": POSTMARK_CANARY,
        "api_url": fake_esp.postmark_api_url,
    }
    tenants.globex.save()
    tenants.hooli.mail_options = {
        "host": fake_smtp.host,
        "port": fake_smtp.port,
        "username": "hooli",
        "password": SMTP_CANARY,
    }
    tenants.hooli.save()
    return tenants


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def message(subject: str = "s") -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"])


def test_successful_sends_with_debug_logging(
    canary_tenants: Tenants, fake_esp: FakeESP, fake_smtp: FakeSMTP, all_logs: Any
) -> None:
    seen: list[str] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(repr(kwargs))

    signals.pre_send.connect(receiver)
    signals.post_send.connect(receiver)
    try:
        for schema in ("acme", "globex", "hooli"):
            backend = mailer(tenant=schema)
            assert backend.send_messages([message(schema)]) == 1
            seen.append(repr(backend) + str(backend) + repr(backend.resolve()))
    finally:
        signals.pre_send.disconnect(receiver)
        signals.post_send.disconnect(receiver)
    assert {m.credential for m in fake_esp.wait_for(2)} == {MAILGUN_CANARY, POSTMARK_CANARY}
    assert fake_smtp.wait_for(1)[0].credential == f"hooli:{SMTP_CANARY}"
    assert len(seen) == 9
    assert_clean("\n".join(seen), "signals / repr")
    assert_clean(all_logs.text, "DEBUG logs")
    assert any(r.name.startswith("tenantmail") for r in all_logs.records)


def test_esp_errors_and_their_logs(
    canary_tenants: Tenants, fake_esp: FakeESP, all_logs: Any
) -> None:
    texts = []
    for status in (400, 401, 403, 429, 500):
        fake_esp.fail_next(status, body=f'{{"message": "status {status}"}}')
        with pytest.raises(AnymailAPIError) as raised:
            mailer(tenant="acme").send_messages([message()])
        exc = raised.value
        texts += [str(exc), repr(exc), "\n".join(getattr(exc, "__notes__", []))]
    fake_esp.fail_next(500)
    assert mailer(tenant="acme", fail_silently=True).send_messages([message()]) == 0
    assert_clean("\n".join(texts), "ESP error messages")
    assert_clean(all_logs.text, "logs of ESP errors")


def test_model_instance_and_options_reprs(canary_tenants: Tenants) -> None:
    acme = Client.objects.get(schema_name="acme")
    texts = [repr(acme), str(acme), repr(acme.mail_options), str(acme.mail_options)]
    texts.append(repr(vars(acme)))
    texts.append(repr(acme.get_mail_config()))
    assert acme.mail_options["api_key"] == MAILGUN_CANARY  # the value is really there
    assert_clean("\n".join(texts), "reprs")


def test_database_column_holds_ciphertext(canary_tenants: Tenants) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT mail_options FROM public.tenants_app_client")
        raw = "\n".join(str(row[0]) for row in cursor.fetchall())
    assert raw.count("gAAAA") >= 3  # Fernet tokens
    assert_clean(raw, "the mail_options column")


def test_management_command_and_system_check_output(canary_tenants: Tenants) -> None:
    out, err = StringIO(), StringIO()
    call_command("tenantmail_reencrypt", stdout=out, stderr=err)
    call_command("check", stdout=out, stderr=err)
    assert "re-encrypted" in out.getvalue()
    assert_clean(out.getvalue() + err.getvalue(), "command output")


def test_model_form_html_never_renders_the_options(canary_tenants: Tenants) -> None:
    TenantForm = forms.modelform_factory(
        Client, fields=["mail_backend", "mail_options", "mail_defaults"]
    )
    acme = Client.objects.get(schema_name="acme")
    html = str(TenantForm(instance=acme))
    assert 'name="mail_options"' in html
    assert_clean(html, "the tenant form")


def _error_report(exc_info: Any) -> tuple[str, str]:
    request = RequestFactory().get("/send/")
    reporter = ExceptionReporter(request, *exc_info, is_email=True)
    return reporter.get_traceback_text(), reporter.get_traceback_html()


@pytest.mark.parametrize("schema", ["acme", "globex"])
def test_error_report_for_an_esp_failure_inside_the_send_path(
    schema: str, canary_tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.DEBUG = False  # what production (and AdminEmailHandler) reports look like
    fake_esp.fail_next(500)
    try:
        mailer(tenant=schema).send_messages([message()])
    except Exception:
        text, html = _error_report(sys.exc_info())
    else:  # pragma: no cover - the fault above makes the send fail
        pytest.fail("the send should have failed")
    # The report is real: it shows the failing frames (Anymail's, requests') and their names.
    assert "post_to_esp" in text
    assert "send_messages" in html
    assert_clean(text, "ExceptionReporter text")
    assert_clean(html, "ExceptionReporter HTML")


def test_error_report_for_an_smtp_auth_failure(canary_tenants: Tenants, settings: Any) -> None:
    settings.DEBUG = False
    with FakeSMTP(users={"hooli": "the-right-password"}) as strict:
        hooli = canary_tenants.hooli
        hooli.mail_options = {
            "host": strict.host,
            "port": strict.port,
            "username": "hooli",
            "password": SMTP_CANARY,
        }
        hooli.confirm_mail_endpoint_change()  # the platform's own test set-up
        hooli.save()
        try:
            mailer(tenant="hooli").send_messages([message()])
        except Exception:
            text, html = _error_report(sys.exc_info())
        else:  # pragma: no cover
            pytest.fail("the SMTP server should have refused the login")
    assert "SMTPAuthenticationError" in text
    assert "login" in text
    assert_clean(text, "ExceptionReporter text")
    assert_clean(html, "ExceptionReporter HTML")


def test_configuration_error_report(canary_tenants: Tenants, settings: Any) -> None:
    settings.DEBUG = False
    acme = canary_tenants.acme
    acme.mail_options = {**acme.mail_options, "idna_encoder": "os.system"}
    acme.save()
    with pytest.raises(TenantMailConfigurationError, match="idna_encoder") as raised:
        mailer(tenant="acme").send_messages([message()])
    text, html = _error_report((raised.type, raised.value, raised.tb))
    assert "idna_encoder" in text
    assert_clean(text, "config error report text")
    assert_clean(html, "config error report HTML")
