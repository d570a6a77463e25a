"""Inbound for Brevo, Resend and Amazon SES at each tenant's URL, with each ESP's payload shape.

Validation is the tenant's own secret (Brevo and SES basic auth, Resend's inbound Svix secret);
content Anymail downloads (Brevo attachments, Resend messages) is fetched from the fake ESP with
the tenant's own sending key, never the platform's, and never from a tenant-chosen api_url.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client as HttpClient

from tenantmail import signals
from tenantmail.testing import FakeESP
from tenantmail.webhooks import inbound_url
from tenantmail.webhooks import testing_inbound as inbound
from tenantmail.webhooks.testing import FakeSNS, resend_signing_secret
from tests.conftest import Tenants

pytestmark = [pytest.mark.django_db]

ACME_BASIC = "acme:inbound-CANARY-9a8b7c6d5e4f"
GLOBEX_BASIC = "globex:inbound-CANARY-1f2e3d4c5b6a"
ACME_INBOUND, GLOBEX_INBOUND = resend_signing_secret(), resend_signing_secret()
ACME_API_KEY = "acme-esp-api-key-CANARY-0c0ffee0"
PLATFORM_API_KEY = "platform-esp-api-key-CANARY-badc0de"


@pytest.fixture
def fake_sns() -> Iterator[FakeSNS]:
    with FakeSNS() as sns:
        yield sns


@pytest.fixture
def got() -> Iterator[list[tuple[str | None, Any, str]]]:
    seen: list[tuple[str | None, Any, str]] = []

    def receiver(sender: Any, tenant: str | None, event: Any, **kw: Any) -> None:
        seen.append((tenant, event, connection.schema_name))

    signals.inbound.connect(receiver, dispatch_uid="inbound-test")
    yield seen
    signals.inbound.disconnect(dispatch_uid="inbound-test")


def use(tenants: Tenants, name: str, backend: str, options: dict[str, Any]) -> None:
    """Move a tenant to another ESP account (a bulk update: no endpoint-move confirmation)."""
    tenant = getattr(tenants, name)
    type(tenant).objects.filter(pk=tenant.pk).update(mail_backend=backend, mail_options=options)


@pytest.fixture
def esps(tenants: Tenants, fake_esp: FakeESP, fake_sns: FakeSNS, settings: Any) -> Tenants:
    """acme and globex have their own accounts and inbound secrets; the platform's API URLs
    point at the fake ESP, and the platform's own keys are canaries that must never be used."""
    settings.ANYMAIL = {
        "BREVO_API_URL": f"{fake_esp.base_url}brevo/v3/",
        "BREVO_API_KEY": PLATFORM_API_KEY,
        "RESEND_API_URL": f"{fake_esp.base_url}resend/",
        "RESEND_API_KEY": PLATFORM_API_KEY,
    }
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "WEBHOOKS": {
            "SNS_CERT_URL_PATTERN": fake_sns.cert_url_pattern,
            "SNS_CA_BUNDLE": fake_sns.ca_bundle_path,
        },
    }
    for tenant, basic, svix in (
        (tenants.acme, ACME_BASIC, ACME_INBOUND),
        (tenants.globex, GLOBEX_BASIC, GLOBEX_INBOUND),
    ):
        tenant.mail_webhook_secrets = {
            "brevo": {"webhook_secret": basic},
            "resend": {"inbound_secret": svix},
            "amazon_ses": {"webhook_secret": basic},
        }
        tenant.save()
    inbound.downloads.clear()
    return tenants


def post(url: str, payload: tuple[bytes, str, dict[str, str]]) -> Any:
    body, content_type, headers = payload
    return HttpClient().post(
        url, data=body, content_type=content_type, HTTP_HOST="localhost", **headers
    )


# -- Brevo ---------------------------------------------------------------------------------------


def test_brevo_inbound_with_attachment_uses_the_tenants_key(esps: Tenants, got: list[Any]) -> None:
    use(esps, "acme", "brevo", {"api_key": ACME_API_KEY})
    response = post(
        inbound_url("acme", "brevo"), inbound.brevo_inbound_post(ACME_BASIC, attachment=True)
    )
    assert response.status_code == 200, response.content
    [(tenant, event, schema)] = got
    assert (tenant, schema) == ("acme", "acme")
    assert event.message["Subject"] == "Hello from Brevo"
    [attachment] = event.message.attachments
    assert attachment.get_content_bytes() == inbound.ATTACHMENT_BYTES
    assert inbound.downloads == [("brevo", ACME_API_KEY)]


def test_brevo_inbound_other_tenants_credential_is_rejected(esps: Tenants, got: list[Any]) -> None:
    response = post(inbound_url("acme", "brevo"), inbound.brevo_inbound_post(GLOBEX_BASIC))
    assert response.status_code == 400
    assert got == []


def test_brevo_attachment_without_the_tenants_own_key_is_refused(
    esps: Tenants, got: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """acme sends through Mailgun: it has no Brevo key, and the platform's is never used."""
    with caplog.at_level(logging.WARNING, logger="tenantmail.webhooks"):
        response = post(
            inbound_url("acme", "brevo"), inbound.brevo_inbound_post(ACME_BASIC, attachment=True)
        )
    assert response.status_code == 403
    assert got == []
    assert inbound.downloads == []
    assert "api_key" in caplog.text
    assert PLATFORM_API_KEY not in caplog.text + response.content.decode()
    # Without an attachment there is nothing to download: delivered.
    assert post(inbound_url("acme", "brevo"), inbound.brevo_inbound_post(ACME_BASIC)).status_code
    assert [t for t, _e, _s in got] == ["acme"]


def test_platform_account_tenant_downloads_with_the_platform_key(
    esps: Tenants, got: list[Any], settings: Any
) -> None:
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "platform:basic-secret"}
    payload = inbound.brevo_inbound_post("platform:basic-secret", attachment=True)
    assert post(inbound_url("initech", "brevo"), payload).status_code == 200
    assert [t for t, _e, _s in got] == ["initech"]
    assert inbound.downloads == [("brevo", PLATFORM_API_KEY)]


def test_tenant_api_url_is_never_the_download_host(
    esps: Tenants, got: list[Any], fake_esp: FakeESP, settings: Any
) -> None:
    """A tenant-chosen api_url would let it read any address the platform reaches."""
    use(esps, "acme", "brevo", {"api_key": ACME_API_KEY, "api_url": "http://127.0.0.1:9/x/"})
    response = post(
        inbound_url("acme", "brevo"), inbound.brevo_inbound_post(ACME_BASIC, attachment=True)
    )
    assert response.status_code == 200
    assert inbound.downloads == [("brevo", ACME_API_KEY)]  # from the platform-set host


# -- Resend --------------------------------------------------------------------------------------


def test_resend_inbound_downloads_the_message_with_the_tenants_key(
    esps: Tenants, got: list[Any]
) -> None:
    use(esps, "acme", "resend", {"api_key": ACME_API_KEY})
    response = post(inbound_url("acme", "resend"), inbound.resend_inbound_post(ACME_INBOUND))
    assert response.status_code == 200, response.content
    [(tenant, event, schema)] = got
    assert (tenant, schema) == ("acme", "acme")
    assert event.message["Subject"] == "Hello from Resend"
    assert inbound.downloads == [("resend", ACME_API_KEY)]


@pytest.mark.parametrize("secret", [GLOBEX_INBOUND, None])
def test_resend_inbound_wrong_or_no_signature_is_rejected(
    secret: str | None, esps: Tenants, got: list[Any]
) -> None:
    use(esps, "acme", "resend", {"api_key": ACME_API_KEY})
    response = post(inbound_url("acme", "resend"), inbound.resend_inbound_post(secret))
    assert response.status_code == 400
    assert got == []
    assert inbound.downloads == []


def test_resend_inbound_without_the_tenants_own_key_is_refused(
    esps: Tenants, got: list[Any]
) -> None:
    response = post(inbound_url("acme", "resend"), inbound.resend_inbound_post(ACME_INBOUND))
    assert response.status_code == 403
    assert got == []
    assert inbound.downloads == []


# -- Amazon SES ----------------------------------------------------------------------------------


def test_ses_inbound_inline_content_is_dispatched_as_the_tenant(
    esps: Tenants, got: list[Any], fake_sns: FakeSNS
) -> None:
    response = post(
        inbound_url("acme", "amazon_ses"), inbound.ses_inbound_post(fake_sns, ACME_BASIC)
    )
    assert response.status_code == 200, response.content
    [(tenant, event, schema)] = got
    assert (tenant, schema) == ("acme", "acme")
    assert event.message["Subject"] == "Hello from SES"
    assert event.message.envelope_recipient == "support@acme.example"


@pytest.mark.parametrize(
    ("signed", "credential"), [(True, GLOBEX_BASIC), (False, ACME_BASIC), (True, None)]
)
def test_ses_inbound_needs_the_tenants_credential_and_sns_signature(
    signed: bool, credential: str | None, esps: Tenants, got: list[Any], fake_sns: FakeSNS
) -> None:
    payload = inbound.ses_inbound_post(fake_sns if signed else None, credential)
    response = post(inbound_url("acme", "amazon_ses"), payload)
    assert response.status_code in (400, 401)
    assert got == []


def test_ses_s3_inbound_without_the_tenants_aws_keys_is_refused(
    esps: Tenants, got: list[Any], fake_sns: FakeSNS, caplog: pytest.LogCaptureFixture
) -> None:
    """boto3 without keys would use the platform's environment: a tenant-signed post naming the
    platform's bucket would make the platform read it for the tenant."""
    with caplog.at_level(logging.WARNING, logger="tenantmail.webhooks"):
        response = post(
            inbound_url("acme", "amazon_ses"),
            inbound.ses_inbound_post(fake_sns, ACME_BASIC, action="S3"),
        )
    assert response.status_code == 403
    assert got == []
    assert "session_params" in caplog.text


def test_ses_inbound_download_params_are_the_tenants_own(esps: Tenants) -> None:
    from tenantmail.webhooks.inbound import AmazonSESInboundView
    from tenantmail.webhooks.tenants import find_tenant

    use(
        esps,
        "acme",
        "amazon_ses",
        {
            "session_params": {"aws_access_key_id": "AKIAACME", "aws_secret_access_key": "s3cr"},
            "client_params": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"},
        },
    )
    kwargs = AmazonSESInboundView().fetch_kwargs(find_tenant("acme"))
    assert kwargs == {
        "session_params": {"aws_access_key_id": "AKIAACME", "aws_secret_access_key": "s3cr"},
        "client_params": {"region_name": "eu-west-1"},  # never a tenant endpoint_url
    }
