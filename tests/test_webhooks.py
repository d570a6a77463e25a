"""Per-tenant webhooks over the real test client and django-tenants routing (host "localhost").

Each ESP's documented payload is posted to a tenant's URL, signed the way the ESP signs it (see
``tenantmail.webhooks.testing``): with the tenant's own key it is dispatched, as that tenant and
inside its schema; with another tenant's key, no key or a tampered body it is refused with
Anymail's status (400) and nothing is dispatched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from anymail.signals import EventType
from anymail.signals import inbound as anymail_inbound
from anymail.signals import tracking as anymail_tracking
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from django.db import connection
from django.test import Client as HttpClient

from tenantmail import signals
from tenantmail.tenancy import current_tenant
from tenantmail.webhooks import inbound_url, tracking_url
from tenantmail.webhooks.testing import (
    SendGridKey,
    basic_auth,
    brevo_post,
    mailgun_post,
    postmark_post,
    resend_post,
    resend_signing_secret,
    sendgrid_post,
)
from tests.conftest import Tenants

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

ACME_SIGNING = "acme-signing-CANARY-0b7e1c5f9d2a"
GLOBEX_SIGNING = "globex-signing-CANARY-77c3a4e1b9f0"
ACME_BASIC = "acme:basic-CANARY-1a2b3c4d5e6f"
GLOBEX_BASIC = "globex:basic-CANARY-6f5e4d3c2b1a"
PLATFORM_SIGNING = "platform-signing-CANARY-aa11bb22"
SENDGRID_ACME, SENDGRID_GLOBEX = SendGridKey(), SendGridKey()
RESEND_ACME, RESEND_GLOBEX = resend_signing_secret(), resend_signing_secret()
CANARIES = (
    ACME_SIGNING,
    GLOBEX_SIGNING,
    ACME_BASIC,
    GLOBEX_BASIC,
    PLATFORM_SIGNING,
    RESEND_ACME,
    RESEND_GLOBEX,
)


def secrets_for(signing: str, basic: str, key: SendGridKey, resend: str) -> dict[str, Any]:
    return {
        "mailgun": {"webhook_signing_key": signing},
        "postmark": {"webhook_secret": basic},
        "brevo": {"webhook_secret": basic},
        "sendgrid": {"tracking_webhook_verification_key": key.public_key},
        "resend": {"signing_secret": resend},
        "amazon_ses": {"webhook_secret": basic},
    }


@pytest.fixture
def hooked(tenants: Tenants) -> Tenants:
    """acme and globex have their own accounts and webhook secrets; initech is on the platform's."""
    tenants.acme.mail_webhook_secrets = secrets_for(
        ACME_SIGNING, ACME_BASIC, SENDGRID_ACME, RESEND_ACME
    )
    tenants.acme.save()
    tenants.globex.mail_webhook_secrets = secrets_for(
        GLOBEX_SIGNING, GLOBEX_BASIC, SENDGRID_GLOBEX, RESEND_GLOBEX
    )
    tenants.globex.save()
    return tenants


@dataclass
class Received:
    ours: list[dict[str, Any]] = field(default_factory=list)
    anymail: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def received() -> Iterator[Received]:
    got = Received()

    def ours(sender: Any, tenant: str | None, event: Any, esp_name: str, **kw: Any) -> None:
        active = current_tenant()
        got.ours.append(
            {
                "tenant": tenant,
                "event": event,
                "esp_name": esp_name,
                "schema": connection.schema_name,
                "active": None if active is None else active.schema_name,
            }
        )

    def theirs(sender: Any, event: Any, esp_name: str, **kw: Any) -> None:
        got.anymail.append({"sender": sender, "event": event, "schema": connection.schema_name})

    for signal in (signals.tracking, signals.inbound):
        signal.connect(ours, dispatch_uid="test-ours")
    for signal in (anymail_tracking, anymail_inbound):
        signal.connect(theirs, dispatch_uid="test-theirs")
    yield got
    for signal in (signals.tracking, signals.inbound):
        signal.disconnect(dispatch_uid="test-ours")
    for signal in (anymail_tracking, anymail_inbound):
        signal.disconnect(dispatch_uid="test-theirs")


def post(url: str, payload: tuple[bytes, str, dict[str, str]]) -> Any:
    body, content_type, headers = payload
    return HttpClient().post(
        url, data=body, content_type=content_type, HTTP_HOST="localhost", **headers
    )


# -- one "right key / wrong tenant's key / no key / tampered" matrix per ESP ---------------------

ESP_CASES = {
    "mailgun": (
        lambda t, **kw: mailgun_post(ACME_SIGNING if t == "acme" else GLOBEX_SIGNING, **kw),
        lambda **kw: mailgun_post("", **kw),
    ),
    "postmark": (
        lambda t, **kw: postmark_post(ACME_BASIC if t == "acme" else GLOBEX_BASIC, **kw),
        lambda **kw: postmark_post(None, **kw),
    ),
    "brevo": (
        lambda t, **kw: brevo_post(ACME_BASIC if t == "acme" else GLOBEX_BASIC, **kw),
        lambda **kw: brevo_post(None, **kw),
    ),
    "sendgrid": (
        lambda t, **kw: sendgrid_post(SENDGRID_ACME if t == "acme" else SENDGRID_GLOBEX, **kw),
        lambda **kw: sendgrid_post(None, **kw),
    ),
    "resend": (
        lambda t, **kw: resend_post(RESEND_ACME if t == "acme" else RESEND_GLOBEX, **kw),
        lambda **kw: resend_post(None, **kw),
    ),
}


@pytest.mark.parametrize("esp", sorted(ESP_CASES))
def test_right_key_dispatches_as_the_url_tenant_inside_its_schema(
    esp: str, hooked: Tenants, received: Received
) -> None:
    signed, _unsigned = ESP_CASES[esp]
    response = post(tracking_url(hooked.acme, esp), signed("acme", metadata={"tenant": "acme"}))
    assert response.status_code == 200, response.content
    assert [r["tenant"] for r in received.ours] == ["acme"]
    event = received.ours[0]["event"]
    assert event.event_type == EventType.DELIVERED
    assert event.recipient == "ann@example.com"
    assert received.ours[0]["schema"] == "acme"
    assert received.ours[0]["active"] == "acme"
    # Anymail's own signal fires too, in the tenant's schema, from Anymail's view class.
    assert len(received.anymail) == 1
    assert received.anymail[0]["schema"] == "acme"
    assert received.anymail[0]["sender"].__module__.startswith("anymail.webhooks")
    assert connection.schema_name == "public"


@pytest.mark.parametrize("esp", sorted(ESP_CASES))
def test_another_tenants_key_is_rejected_and_nothing_dispatched(
    esp: str, hooked: Tenants, received: Received, caplog: pytest.LogCaptureFixture
) -> None:
    signed, _unsigned = ESP_CASES[esp]
    with caplog.at_level(logging.DEBUG):
        response = post(tracking_url(hooked.acme, esp), signed("globex"))
    assert response.status_code == 400
    assert received.ours == []
    assert received.anymail == []
    assert "tenant 'acme' mail_webhook_secrets[\"" in caplog.text
    assert_no_canary(response.content.decode() + caplog.text)


@pytest.mark.parametrize("esp", sorted(ESP_CASES))
def test_no_key_is_rejected(esp: str, hooked: Tenants, received: Received) -> None:
    _signed, unsigned = ESP_CASES[esp]
    response = post(tracking_url(hooked.acme, esp), unsigned())
    assert response.status_code == 400
    assert received.ours == []
    assert received.anymail == []


@pytest.mark.parametrize("esp", ["sendgrid", "resend"])
def test_tampered_body_is_rejected(esp: str, hooked: Tenants, received: Received) -> None:
    signed, _unsigned = ESP_CASES[esp]
    body, content_type, headers = signed("acme")
    tampered = body.replace(b"ann@example.com", b"eve@example.com")
    assert tampered != body
    response = post(tracking_url(hooked.acme, esp), (tampered, content_type, headers))
    assert response.status_code == 400
    assert received.ours == []
    assert received.anymail == []


def test_mailgun_signature_is_single_use(hooked: Tenants, received: Received) -> None:
    """Mailgun signs timestamp+token only: a captured signature must not carry another body."""
    body, content_type, headers = mailgun_post(ACME_SIGNING)
    url = tracking_url(hooked.acme, "mailgun")
    assert post(url, (body, content_type, headers)).status_code == 200
    tampered = body.replace(b"ann@example.com", b"eve@example.com")
    assert post(url, (tampered, content_type, headers)).status_code == 200  # acknowledged...
    assert [r["event"].recipient for r in received.ours] == ["ann@example.com"]  # ...ignored
    # Tokens are per tenant: the same token at another tenant's URL is judged on its own.
    globex = mailgun_post(GLOBEX_SIGNING, token=json.loads(body)["signature"]["token"])
    assert post(tracking_url("globex", "mailgun"), globex).status_code == 200
    assert len(received.ours) == 2


@pytest.mark.parametrize("esp", sorted(ESP_CASES))
def test_cross_tenant_metadata_is_rejected(
    esp: str, hooked: Tenants, received: Received, caplog: pytest.LogCaptureFixture
) -> None:
    """acme signs (validly, with its own key) an event claiming to be globex's mail."""
    signed, _unsigned = ESP_CASES[esp]
    with caplog.at_level(logging.WARNING, logger="tenantmail.webhooks"):
        response = post(
            tracking_url(hooked.acme, esp), signed("acme", metadata={"tenant": "globex"})
        )
    assert response.status_code == 400
    assert b"another tenant" in response.content
    assert received.ours == []
    assert received.anymail == []
    assert "cross-tenant" in caplog.text


def test_a_batch_with_one_foreign_event_is_rejected_whole(
    hooked: Tenants, received: Received
) -> None:
    mine = {"email": "a@example.com", "timestamp": 1, "event": "delivered", "tenant": "acme"}
    theirs = {**mine, "email": "b@example.com", "tenant": "globex"}
    response = post(
        tracking_url(hooked.acme, "sendgrid"), sendgrid_post(SENDGRID_ACME, events=[mine, theirs])
    )
    assert response.status_code == 400
    assert received.ours == []


@pytest.mark.parametrize("esp", sorted(ESP_CASES))
def test_replay_is_harmless(esp: str, hooked: Tenants, received: Received) -> None:
    """A replay is acknowledged; receivers see it again (as with Anymail) except Mailgun's."""
    signed, _unsigned = ESP_CASES[esp]
    payload = signed("acme", metadata={"tenant": "acme"})
    assert post(tracking_url(hooked.acme, esp), payload).status_code == 200
    assert post(tracking_url(hooked.acme, esp), payload).status_code == 200
    expected = 1 if esp == "mailgun" else 2
    assert [r["tenant"] for r in received.ours] == ["acme"] * expected


def test_mailgun_stale_timestamp_is_rejected(hooked: Tenants, received: Received) -> None:
    old = mailgun_post(ACME_SIGNING, timestamp=time.time() - 3600)
    assert post(tracking_url(hooked.acme, "mailgun"), old).status_code == 400
    assert received.ours == []


def test_mailgun_max_age_can_be_disabled(
    hooked: Tenants, received: Received, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "WEBHOOKS": {"MAILGUN_MAX_AGE": None}}
    old = mailgun_post(ACME_SIGNING, timestamp=time.time() - 3600)
    assert post(tracking_url(hooked.acme, "mailgun"), old).status_code == 200


def test_sender_specific_anymail_receivers_keep_working(hooked: Tenants) -> None:
    got = []

    def receiver(sender: Any, event: Any, esp_name: str, **kw: Any) -> None:
        got.append((esp_name, connection.schema_name))

    anymail_tracking.connect(receiver, sender=MailgunTrackingWebhookView, weak=False)
    try:
        response = post(tracking_url("acme", "mailgun"), mailgun_post(ACME_SIGNING))
    finally:
        anymail_tracking.disconnect(receiver, sender=MailgunTrackingWebhookView)
    assert response.status_code == 200
    assert got == [("Mailgun", "acme")]


# -- unknown, deleted, unconfigured, malformed: clear 4xx, never 500 ------------------------------


@pytest.mark.parametrize("key", ["nosuchtenant", "public"])
def test_unknown_tenant_is_404(key: str, hooked: Tenants, received: Received) -> None:
    response = post(f"/tenantmail/mailgun/tracking/{key}/", mailgun_post(ACME_SIGNING))
    assert response.status_code == 404
    assert received.ours == []


def test_deleted_tenant_is_404(hooked: Tenants, received: Received) -> None:
    url = tracking_url(hooked.globex, "mailgun")
    hooked.globex.auto_drop_schema = False
    hooked.globex.delete(force_drop=False)
    response = post(url, mailgun_post(GLOBEX_SIGNING))
    assert response.status_code == 404
    assert received.ours == []


def test_tenant_without_its_secret_is_403_not_the_platform_key(
    hooked: Tenants, received: Received, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The platform's key would validate this event; it must not be used for acme's own account.
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING}
    hooked.acme.mail_webhook_secrets = {"postmark": {"webhook_secret": ACME_BASIC}}
    hooked.acme.save()
    with caplog.at_level(logging.WARNING, logger="tenantmail.webhooks"):
        response = post(tracking_url("acme", "mailgun"), mailgun_post(PLATFORM_SIGNING))
    assert response.status_code == 403
    assert received.ours == []
    assert 'mail_webhook_secrets["mailgun"]' in caplog.text
    assert_no_canary(response.content.decode() + caplog.text)


def test_platform_account_tenant_uses_platform_anymail_settings(
    hooked: Tenants, received: Received, settings: Any
) -> None:
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING}
    url = tracking_url(hooked.initech, "mailgun")
    ok = post(url, mailgun_post(PLATFORM_SIGNING, metadata={"tenant": "initech"}))
    assert ok.status_code == 200
    assert [r["tenant"] for r in received.ours] == ["initech"]
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 400


def test_platform_settings_missing_is_403(hooked: Tenants, settings: Any) -> None:
    settings.ANYMAIL = {}
    response = post(tracking_url(hooked.initech, "mailgun"), mailgun_post(PLATFORM_SIGNING))
    assert response.status_code == 403


def test_platform_url_attributes_by_metadata(
    hooked: Tenants, received: Received, settings: Any
) -> None:
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING}
    url = tracking_url(None, "mailgun")
    assert url == "/tenantmail/mailgun/tracking/"
    for meta in ({"tenant": "initech"}, {}, {"tenant": "nosuchtenant"}):
        assert post(url, mailgun_post(PLATFORM_SIGNING, metadata=meta)).status_code == 200
    assert [(r["tenant"], r["schema"]) for r in received.ours] == [
        ("initech", "initech"),
        (None, "public"),
        (None, "public"),
    ]
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 400


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"signature": 1}', b"\xff\xfe", b'{"event-data": {}}'],
)
def test_malformed_mailgun_bodies_are_400(body: bytes, hooked: Tenants, received: Received) -> None:
    response = post(tracking_url("acme", "mailgun"), (body, "application/json", {}))
    assert response.status_code == 400
    assert b"Traceback" not in response.content
    assert received.ours == []


def test_validly_signed_but_unparsable_body_is_400(hooked: Tenants, received: Received) -> None:
    body, content_type, headers = mailgun_post(ACME_SIGNING)
    data = json.loads(body)
    data["event-data"] = {"no": "event"}
    response = post(
        tracking_url("acme", "mailgun"), (json.dumps(data).encode(), content_type, headers)
    )
    assert response.status_code == 400
    assert received.ours == []


@pytest.mark.parametrize(
    "body", [b"", b'{"RecordType": "Inbound", "FromFull": {}}', b"[1]", b"\xff"]
)
def test_malformed_postmark_bodies_are_400(
    body: bytes, hooked: Tenants, received: Received
) -> None:
    response = post(
        tracking_url("acme", "postmark"), (body, "application/json", basic_auth(ACME_BASIC))
    )
    assert response.status_code == 400
    assert received.ours == []


def test_bad_sendgrid_key_is_403_without_echoing_it(
    hooked: Tenants, caplog: pytest.LogCaptureFixture
) -> None:
    hooked.acme.mail_webhook_secrets = {
        "sendgrid": {"tracking_webhook_verification_key": "not-a-key-CANARY"}
    }
    hooked.acme.save()
    with caplog.at_level(logging.DEBUG):
        response = post(tracking_url("acme", "sendgrid"), sendgrid_post(SENDGRID_ACME))
    assert response.status_code == 403
    assert "not-a-key-CANARY" not in response.content.decode() + caplog.text


def test_undecryptable_secrets_are_403(hooked: Tenants, settings: Any) -> None:
    from cryptography.fernet import Fernet

    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
    }
    response = post(tracking_url("acme", "mailgun"), mailgun_post(ACME_SIGNING))
    assert response.status_code == 403


def test_head_and_get(hooked: Tenants) -> None:
    client = HttpClient()
    assert client.head(tracking_url("acme", "mailgun"), HTTP_HOST="localhost").status_code == 200
    assert client.get(tracking_url("acme", "mailgun"), HTTP_HOST="localhost").status_code == 405


# -- inbound --------------------------------------------------------------------------------------


def test_postmark_inbound_is_dispatched_as_the_tenant(hooked: Tenants, received: Received) -> None:
    body = {
        "FromFull": {"Email": "bob@example.net", "Name": "Bob"},
        "ToFull": [{"Email": "support@acme.example", "Name": ""}],
        "Subject": "Help",
        "MessageID": "in-1",
        "TextBody": "hi",
        "Headers": [],
        "Attachments": [],
    }
    url = inbound_url(hooked.acme, "postmark")
    ok = post(url, (json.dumps(body).encode(), "application/json", basic_auth(ACME_BASIC)))
    assert ok.status_code == 200
    assert [(r["tenant"], r["schema"]) for r in received.ours] == [("acme", "acme")]
    assert received.ours[0]["event"].message.subject == "Help"
    bad = post(url, (json.dumps(body).encode(), "application/json", basic_auth(GLOBEX_BASIC)))
    assert bad.status_code == 400


# -- URLs -----------------------------------------------------------------------------------------


def test_tracking_url_shapes(hooked: Tenants) -> None:
    assert tracking_url(hooked.acme, "mailgun") == "/tenantmail/mailgun/tracking/acme/"
    assert tracking_url("globex", "amazon_ses") == "/tenantmail/amazon_ses/tracking/globex/"
    assert inbound_url(None, "mailgun") == "/tenantmail/mailgun/inbound/"
    for spelling in ("Amazon SES", "amazon-ses", "ses"):
        assert tracking_url("acme", spelling) == "/tenantmail/amazon_ses/tracking/acme/"
    assert tracking_url("acme", "Mailgun") == "/tenantmail/mailgun/tracking/acme/"
    with pytest.raises(ValueError, match="supported"):
        tracking_url("acme", "carrier-pigeon")
    with pytest.raises(ValueError, match="supported"):
        inbound_url("acme", "sparkpost")  # Anymail has one; not per tenant (yet)
    assert inbound_url("acme", "resend") == "/tenantmail/resend/inbound/acme/"
    with pytest.raises(TypeError):
        tracking_url(42, "mailgun")


def test_tracking_url_falls_back_to_the_public_urlconf(settings: Any) -> None:
    from django.urls import NoReverseMatch, clear_url_caches

    settings.ROOT_URLCONF = "tests.urls_tenant_site"
    settings.PUBLIC_SCHEMA_URLCONF = "tests.urls"
    clear_url_caches()
    assert tracking_url("acme", "mailgun") == "/tenantmail/mailgun/tracking/acme/"
    del settings.PUBLIC_SCHEMA_URLCONF
    with pytest.raises(NoReverseMatch):
        tracking_url("acme", "mailgun")


# -- canaries ------------------------------------------------------------------------------------


def assert_no_canary(text: str) -> None:
    import base64

    for canary in CANARIES:
        assert canary not in text
        assert base64.b64encode(canary.encode()).decode() not in text


def test_secrets_never_reach_responses_logs_or_the_sending_backend(
    hooked: Tenants, caplog: pytest.LogCaptureFixture
) -> None:
    from tenantmail import mailer

    stored = type(hooked.acme).objects.get(pk=hooked.acme.pk).mail_webhook_secrets
    texts = [repr(stored), str(stored)]
    with caplog.at_level(logging.DEBUG):
        for esp, (signed, unsigned) in ESP_CASES.items():
            url = tracking_url("acme", esp)
            for payload in (signed("acme"), signed("globex"), unsigned()):
                texts.append(post(url, payload).content.decode())
        config = mailer(tenant="acme").resolve()
    texts += [caplog.text, repr(config)]
    assert_no_canary("\n".join(texts))
    # Webhook secrets are not sending credentials: never options of the inner backend.
    assert "webhook_signing_key" not in config.options
    assert "mailgun" not in config.options


@pytest.mark.parametrize("esp", ["mailgun", "postmark"])
def test_error_reports_of_a_failing_receiver_hold_no_secret(esp: str, hooked: Tenants) -> None:
    """A receiver's exception is a 500 (the ESP retries, as with Anymail); its report is clean."""
    from django.test import RequestFactory
    from django.views.debug import ExceptionReporter

    from tenantmail.webhooks.esps import TRACKING_VIEWS

    def failing(**kwargs: Any) -> None:
        raise RuntimeError("receiver failed")

    signed, _unsigned = ESP_CASES[esp]
    body, content_type, headers = signed("acme")
    request = RequestFactory().post(
        tracking_url("acme", esp), data=body, content_type=content_type, **headers
    )
    signals.tracking.connect(failing, dispatch_uid="failing")
    try:
        with pytest.raises(RuntimeError, match="receiver failed") as excinfo:
            TRACKING_VIEWS[esp].as_view()(request, tenant_key="acme")
    finally:
        signals.tracking.disconnect(dispatch_uid="failing")
    # From the view down (the test's own frame holds the signed request it built).
    reporter = ExceptionReporter(request, excinfo.type, excinfo.value, excinfo.tb.tb_next)
    text, html = reporter.get_traceback_text(), reporter.get_traceback_html()
    assert "receiver failed" in text
    assert "secret_kwargs" in text or "dispatch" in text
    assert_no_canary(text + html)


def test_mailgun_inbound_form_post_is_dispatched_as_the_tenant_once(
    hooked: Tenants, received: Received
) -> None:
    """Mailgun's inbound route posts a form (signature fields among the message fields)."""
    import hashlib
    import hmac
    import secrets

    stamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(
        ACME_SIGNING.encode(), f"{stamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    form = {
        "timestamp": stamp,
        "token": token,
        "signature": signature,
        "recipient": "support@acme.example",
        "sender": "bob@example.net",
        "body-mime": (
            "From: bob@example.net\r\nTo: support@acme.example\r\nSubject: Hi\r\n\r\nhi\r\n"
        ),
    }
    client = HttpClient()
    url = inbound_url("acme", "mailgun")
    assert client.post(url, data=form, HTTP_HOST="localhost").status_code == 200
    assert [(r["tenant"], r["schema"]) for r in received.ours] == [("acme", "acme")]
    assert received.ours[0]["event"].message.subject == "Hi"
    # The same signature again (a replay) is acknowledged but not dispatched.
    assert client.post(url, data=form, HTTP_HOST="localhost").status_code == 200
    assert len(received.ours) == 1
    # A new token under the old signature: refused.
    forged = {**form, "token": secrets.token_hex(25)}
    assert client.post(url, data=forged, HTTP_HOST="localhost").status_code == 400
