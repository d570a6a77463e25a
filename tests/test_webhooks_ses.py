"""Amazon SES over SNS: basic auth per tenant *and* the SNS message signature.

The SNS signing certificate is served over loopback HTTPS by ``FakeSNS`` under a throwaway CA
(trustme), and TENANTMAIL["WEBHOOKS"] trusts exactly that CA and host: the certificate fetch,
TLS verification and RSA signature check all run for real.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from anymail.signals import EventType
from django.test import Client as HttpClient

from tenantmail import signals
from tenantmail.models import Suppression
from tenantmail.webhooks import sns, tracking_url
from tenantmail.webhooks.testing import FakeSNS, basic_auth, ses_post
from tests.conftest import Tenants

pytestmark = pytest.mark.django_db

ACME_BASIC = "acme:ses-CANARY-5d41402abc4b2a76"
GLOBEX_BASIC = "globex:ses-CANARY-7d793037a0760186"


@pytest.fixture(scope="module")
def fake_sns() -> Iterator[FakeSNS]:
    with FakeSNS() as server:
        yield server


@pytest.fixture
def ses(tenants: Tenants, fake_sns: FakeSNS, settings: Any) -> Iterator[Tenants]:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "WEBHOOKS": {
            "SNS_CERT_URL_PATTERN": fake_sns.cert_url_pattern,
            "SNS_CA_BUNDLE": fake_sns.ca_bundle_path,
        },
    }
    tenants.acme.mail_webhook_secrets = {"amazon_ses": {"webhook_secret": ACME_BASIC}}
    tenants.acme.save()
    tenants.globex.mail_webhook_secrets = {
        "amazon_ses": {
            "webhook_secret": GLOBEX_BASIC,
            "topic_arns": ["arn:aws:sns:eu-west-1:210987654321:globex-ses"],
        }
    }
    tenants.globex.save()
    sns.certificates.clear()
    yield tenants
    sns.certificates.clear()


@pytest.fixture
def received() -> Iterator[list[tuple[str | None, Any]]]:
    got: list[tuple[str | None, Any]] = []

    def receiver(sender: Any, tenant: str | None, event: Any, **kw: Any) -> None:
        got.append((tenant, event))

    signals.tracking.connect(receiver, dispatch_uid="ses-test")
    yield got
    signals.tracking.disconnect(dispatch_uid="ses-test")


def post(url: str, payload: tuple[bytes, str, dict[str, str]]) -> Any:
    body, content_type, headers = payload
    return HttpClient().post(
        url, data=body, content_type=content_type, HTTP_HOST="localhost", **headers
    )


def test_signed_event_with_the_tenants_credential_is_dispatched(
    ses: Tenants, fake_sns: FakeSNS, received: list[Any]
) -> None:
    url = tracking_url("acme", "amazon_ses")
    response = post(url, ses_post(fake_sns, ACME_BASIC, metadata={"tenant": "acme"}))
    assert response.status_code == 200, response.content
    assert [(t, e.event_type) for t, e in received] == [("acme", EventType.DELIVERED)]
    # A second event reuses the cached certificate.
    fetched = sns.certificates.fetches
    assert post(url, ses_post(fake_sns, ACME_BASIC)).status_code == 200
    assert sns.certificates.fetches == fetched


def test_hard_bounce_suppresses_soft_bounce_does_not(
    ses: Tenants, fake_sns: FakeSNS, received: list[Any]
) -> None:
    url = tracking_url("acme", "amazon_ses")
    hard = ses_post(fake_sns, ACME_BASIC, event="Bounce", recipient="Gone@Example.com")
    soft = ses_post(
        fake_sns, ACME_BASIC, event="Bounce", recipient="full@example.com", bounce_type="Transient"
    )
    assert post(url, hard).status_code == 200
    assert post(url, soft).status_code == 200
    assert list(Suppression.objects.values_list("tenant_schema", "address", "reason")) == [
        ("acme", "gone@example.com", "bounced")
    ]


def test_basic_auth_challenge_then_wrong_tenants_credential(
    ses: Tenants, fake_sns: FakeSNS, received: list[Any]
) -> None:
    url = tracking_url("acme", "amazon_ses")
    challenge = post(url, ses_post(fake_sns, None))
    assert challenge.status_code == 401
    assert challenge["WWW-Authenticate"].startswith("Basic")
    assert post(url, ses_post(fake_sns, GLOBEX_BASIC)).status_code == 400
    assert received == []


def test_unsigned_or_forged_sns_messages_are_rejected(
    ses: Tenants, fake_sns: FakeSNS, received: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The basic-auth credential alone is not enough: the SNS signature must verify too."""
    url = tracking_url("acme", "amazon_ses")
    assert post(url, ses_post(None, ACME_BASIC)).status_code == 400  # no signature at all

    body, content_type, headers = ses_post(fake_sns, ACME_BASIC, recipient="ann@example.com")
    tampered = body.replace(b"ann@example.com", b"eve@example.com")
    assert post(url, (tampered, content_type, headers)).status_code == 400

    message = json.loads(body)
    for field, value in [
        ("SigningCertURL", "https://evil.example/cert.pem"),
        ("SignatureVersion", "3"),
        ("Signature", "!!not base64!!"),
    ]:
        forged = json.dumps({**message, field: value}).encode()
        assert post(url, (forged, content_type, headers)).status_code == 400
    without_timestamp = {k: v for k, v in message.items() if k != "Timestamp"}
    forged = json.dumps(without_timestamp).encode()
    assert post(url, (forged, content_type, headers)).status_code == 400
    assert received == []
    assert ACME_BASIC not in caplog.text


def test_certificate_fetch_failures_are_400_not_500(
    ses: Tenants, fake_sns: FakeSNS, received: list[Any], settings: Any
) -> None:
    url = tracking_url("acme", "amazon_ses")
    # TLS verification fails against the system CAs: the fetch is refused.
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "WEBHOOKS": {"SNS_CERT_URL_PATTERN": fake_sns.cert_url_pattern},
    }
    assert post(url, ses_post(fake_sns, ACME_BASIC)).status_code == 400
    assert received == []


def test_topic_arn_allow_list(ses: Tenants, fake_sns: FakeSNS, received: list[Any]) -> None:
    url = tracking_url("globex", "amazon_ses")
    other_topic = ses_post(fake_sns, GLOBEX_BASIC)  # someone else's (validly signed) topic
    assert post(url, other_topic).status_code == 400
    own = ses_post(
        fake_sns, GLOBEX_BASIC, topic_arn="arn:aws:sns:eu-west-1:210987654321:globex-ses"
    )
    assert post(url, own).status_code == 200
    assert [t for t, _e in received] == ["globex"]


def test_subscription_confirmation_is_logged_not_confirmed(
    ses: Tenants, fake_sns: FakeSNS, received: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    message = fake_sns.sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "sub-1",
            "Token": "tok",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
            "Message": "You have chosen to subscribe",
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "Timestamp": "2026-01-01T10:00:00.000Z",
        }
    )
    headers = {
        "HTTP_X_AMZ_SNS_MESSAGE_TYPE": "SubscriptionConfirmation",
        "HTTP_X_AMZ_SNS_MESSAGE_ID": "sub-1",
        **basic_auth(ACME_BASIC),
    }
    with caplog.at_level(logging.WARNING, logger="tenantmail.webhooks"):
        response = post(
            tracking_url("acme", "amazon_ses"),
            (json.dumps(message).encode(), "text/plain", headers),
        )
    assert response.status_code == 200
    assert received == []
    assert "arn:aws:sns:us-east-1:123456789012:ses-events" in caplog.text
    assert "AWS console" in caplog.text


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"not json", {"HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification"}),
        (b"[]", {"HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification"}),
        (b'{"Type": "Notification"}', {}),
    ],
)
def test_malformed_sns_bodies_are_400(
    body: bytes, headers: dict[str, str], ses: Tenants, received: list[Any]
) -> None:
    response = post(
        tracking_url("acme", "amazon_ses"),
        (body, "text/plain", {**headers, **basic_auth(ACME_BASIC)}),
    )
    assert response.status_code == 400
    assert received == []


def test_webhook_settings_are_validated(settings: Any) -> None:
    from tenantmail.exceptions import TenantMailConfigurationError
    from tenantmail.webhooks.conf import get_webhook_settings

    base = dict(settings.TENANTMAIL)
    for bad, where in [
        ({"WEBHOOKS": []}, 'TENANTMAIL["WEBHOOKS"]'),
        ({"WEBHOOKS": {"NOPE": 1}}, "NOPE"),
        ({"WEBHOOKS": {"SNS_CERT_URL_PATTERN": "("}}, "SNS_CERT_URL_PATTERN"),
        ({"WEBHOOKS": {"SNS_CA_BUNDLE": False}}, "SNS_CA_BUNDLE"),
        ({"WEBHOOKS": {"MAILGUN_MAX_AGE": "soon"}}, "MAILGUN_MAX_AGE"),
        ({"WEBHOOKS": {"MAILGUN_MAX_AGE": -1}}, "MAILGUN_MAX_AGE"),
        ({"WEBHOOKS": {"SNS_CERT_TIMEOUT": True}}, "SNS_CERT_TIMEOUT"),
        ({"WEBHOOKS": {"REPLAY_CACHE": "nosuchcache"}}, "REPLAY_CACHE"),
        ({"WEBHOOKS": {"REPLAY_CACHE": None}}, "REPLAY_CACHE"),
    ]:
        settings.TENANTMAIL = {**base, **bad}
        with pytest.raises(TenantMailConfigurationError) as excinfo:
            get_webhook_settings()
        assert where in str(excinfo.value)
    settings.TENANTMAIL = {
        **base,
        "WEBHOOKS": {"MAILGUN_MAX_AGE": None, "SNS_CA_BUNDLE": "/etc/ssl/ca.pem"},
    }
    parsed = get_webhook_settings()
    assert (parsed.mailgun_max_age, parsed.sns_ca_bundle) == (None, "/etc/ssl/ca.pem")
    assert parsed.sns_cert_timeout == 5.0
    settings.TENANTMAIL = "nope"
    with pytest.raises(TenantMailConfigurationError):
        get_webhook_settings()


def test_logging_never_shows_the_credential(
    ses: Tenants, fake_sns: FakeSNS, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        post(tracking_url("acme", "amazon_ses"), ses_post(fake_sns, GLOBEX_BASIC))
        post(tracking_url("acme", "amazon_ses"), ses_post(None, ACME_BASIC))
    for secret in (ACME_BASIC, GLOBEX_BASIC):
        assert secret not in caplog.text
