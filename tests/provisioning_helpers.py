"""Settings and helpers for the provisioning tests: every ESP account points at one FakeESP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django_tenants.utils import tenant_context

from tenantmail import mailer
from tenantmail.tenancy import tenant_cache
from tenantmail.testing import FakeESP, ReceivedMessage

PARENT_KEY = "key-mgprimary-5555555555555555a1b2"
POSTMARK_ACCOUNT = "pm-account-6666666666666666c3d4"
BREVO_MASTER = "xkeysib-master-7777777777777777e5f6"
AWS_KEY_ID, AWS_SECRET = "AKIAPROVISION0000001", "provision-aws-secret-888888888888"
IDENTITY_ARN = "arn:aws:ses:eu-west-1:123456789012:identity/saas.example"
CONFIG_SET_ARN = "arn:aws:ses:eu-west-1:123456789012:configuration-set/tenants"
SECRETS = (PARENT_KEY, POSTMARK_ACCOUNT, BREVO_MASTER, AWS_SECRET)


def brevo_api_url(esp: FakeESP) -> str:
    return f"{esp.base_url}brevo/v3/"


def subaccounts(esp: FakeESP) -> dict[str, Any]:
    return {
        "mailgun": {"api_key": PARENT_KEY, "api_url": esp.mailgun_api_url},
        "amazon_ses": {
            "session_params": {
                "aws_access_key_id": AWS_KEY_ID,
                "aws_secret_access_key": AWS_SECRET,
                "region_name": "eu-west-1",
            },
            "client_params": {"endpoint_url": esp.amazon_ses_endpoint_url},
        },
    }


def provisioning(esp: FakeESP) -> dict[str, Any]:
    return {
        # Mailgun's primary key and region come from SUBACCOUNTS["mailgun"].
        "mailgun": {},
        "postmark": {
            "account_token": POSTMARK_ACCOUNT,
            "api_url": esp.postmark_api_url,
            "tenant_options": {"api_url": esp.postmark_api_url},
        },
        "amazon_ses": {"resource_arns": [IDENTITY_ARN, CONFIG_SET_ARN]},
        "brevo": {
            "api_key": BREVO_MASTER,
            "api_url": brevo_api_url(esp),
            "email": "mail+{name}@saas.example",
            "tenant_options": {"api_url": brevo_api_url(esp)},
        },
    }


@pytest.fixture
def esp() -> Iterator[FakeESP]:
    """A fresh fake per test, so its accounts start empty."""
    with FakeESP() as fake:
        yield fake


@pytest.fixture
def provisioning_settings(settings: Any, esp: FakeESP) -> dict[str, Any]:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "SUBACCOUNTS": subaccounts(esp),
        "PROVISIONING": provisioning(esp),
    }
    return dict(settings.TENANTMAIL)


def send_as(tenant: Any, esp: FakeESP) -> ReceivedMessage:
    """A real send through TenantBackend in the tenant's context; what the fake received."""
    tenant_cache.invalidate()
    msg = EmailMessage("hello", "body", "app@saas.example", ["customer@example.com"])
    with tenant_context(tenant):
        assert mailer().send_messages([msg]) == 1
    return esp.wait_for(1)[-1]
