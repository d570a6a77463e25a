"""Tenant-supplied defaults and options cannot spoof the trace, borrow a domain or inject headers.

The fake ESP records what reaches the wire (sender domain, metadata, credential): a refused
configuration sends nothing, and an accepted one still carries the tenant's own trace.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.mail import EmailMessage

from tenantmail import mailer
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants, acme_options
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db


def message() -> EmailMessage:
    return EmailMessage("Hello", "body", "hello@acme.example", to=["customer@example.com"])


def set_mail(tenant: Client, **fields: Any) -> Client:
    for name, value in fields.items():
        setattr(tenant, name, value)
    tenant.save()
    return Client.objects.get(pk=tenant.pk)


def refused(tenant: Client, setting: str) -> str:
    with pytest.raises(TenantMailConfigurationError) as raised:
        mailer(tenant=tenant, fail_silently=True).send_messages([message()])
    error = raised.value
    text = str(error)
    assert (error.tenant, error.setting) == (tenant.schema_name, setting), text
    assert f"tenant {tenant.schema_name!r}, {setting}" in text
    for secret in (ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY):
        assert secret not in text
    return text


# -- borrowed domains (platform account) ---------------------------------------------------


@pytest.mark.parametrize(
    "esp_extra",
    [
        {"sender_domain": "mg.acme.example"},  # another tenant's domain, with the platform key
        {"h:Sender": "ceo@acme.example"},
        {"o:tracking": "yes"},  # harmless, but nothing on the platform account is vetted per key
    ],
)
def test_a_platform_account_tenant_cannot_set_esp_extra(
    tenants: Tenants, fake_esp: FakeESP, esp_extra: dict[str, Any]
) -> None:
    # Observed: initech (platform account) set esp_extra.sender_domain to acme's domain and sent
    # as acme with the platform's key.
    initech = set_mail(tenants.initech, mail_defaults={"esp_extra": esp_extra})
    text = refused(initech, "mail_defaults")
    assert "'esp_extra' needs the tenant's own account" in text
    assert fake_esp.messages == []


def test_a_platform_account_tenant_still_sends_with_other_defaults(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    initech = set_mail(
        tenants.initech, mail_defaults={"metadata": {"plan": "pro"}, "tags": ["welcome"]}
    )
    mailer(tenant=initech).send_messages([EmailMessage("s", "b", to=["c@example.com"])])
    (received,) = fake_esp.wait_for(1)
    assert (received.credential, received.sender_domain) == (PLATFORM_KEY, "mg.saas.example")
    assert received.metadata == {"plan": "pro", "tenant": "initech"}


# -- the trace and platform-owned values (own account) -------------------------------------


@pytest.mark.parametrize(
    "esp_extra",
    [
        {"v:tenant": "globex"},  # Mailgun metadata
        {"V:Tenant": "globex"},
        {"h:X-Mailgun-Variables": '{"tenant": "globex"}'},
        {"recipient-variables": '{"customer@example.com": {"tenant": "globex"}}'},
        {"Metadata": {"tenant": "globex"}},  # Postmark
        {"metadata": {"tenant": "globex"}},  # SparkPost, Mandrill ...
        {"custom_args": {"tenant": "globex"}},  # SendGrid
        {"personalizations": {"custom_args": {"tenant": "globex"}}},
        {"headers": {"X-Metadata": '{"tenant": "globex"}'}},  # Brevo, Resend
        {"Globals": {"EventPayload": "{}"}},  # Mailjet
        {"recipients": [{"address": "c@example.com", "metadata": {"tenant": "globex"}}]},
        {"Content": {"Raw": {"Data": "X-Metadata: {}"}}},  # Amazon SES
        {"TenantName": "globex"},  # Amazon SES: set by the platform
        {"sender_domain": "mg.globex.example"},
        {"from": "ceo@globex.example"},
        {"FromEmailAddressIdentityArn": "arn:aws:ses:us-east-1:1:identity/globex.example"},
        {"server_token": "pm-someone-elses-token"},
    ],
)
def test_own_account_esp_extra_cannot_override_the_trace_or_platform_values(
    tenants: Tenants, fake_esp: FakeESP, esp_extra: dict[str, Any]
) -> None:
    # Observed: esp_extra defaults overwrote the trace our metadata carries (Postmark Metadata,
    # SendGrid custom_args), so the ESP's events were attributed to another tenant.
    acme = set_mail(tenants.acme, mail_defaults={"esp_extra": esp_extra})
    text = refused(acme, "mail_defaults")
    assert f"'esp_extra' may not set {next(iter(esp_extra))!r}" in text
    assert fake_esp.messages == []


def test_postmark_metadata_spoof_no_longer_reaches_the_wire(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    globex = set_mail(tenants.globex, mail_defaults={"esp_extra": {"Metadata": {"tenant": "acme"}}})
    refused(globex, "mail_defaults")
    # Without the spoof, globex's trace is what the ESP records.
    globex = set_mail(globex, mail_defaults={"esp_extra": {"MessageStream": "outbound"}})
    mailer(tenant=globex).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.metadata == {"tenant": "globex"}


def test_own_account_esp_extra_is_still_applied(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = set_mail(tenants.acme, mail_defaults={"esp_extra": {"o:testmode": "yes"}})
    mailer(tenant=acme).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert (received.credential, received.sender_domain) == (ACME_KEY, "mg.acme.example")
    assert received.metadata == {"tenant": "acme"}


@pytest.mark.parametrize("header", ["X-Metadata", "x-mailgun-variables", "X-PM-Metadata-tenant"])
def test_a_default_header_cannot_carry_a_spoofed_trace(
    tenants: Tenants, fake_esp: FakeESP, header: str
) -> None:
    acme = set_mail(tenants.acme, mail_defaults={"headers": {header: '{"tenant": "globex"}'}})
    assert f"header {header!r} carries the tenant trace" in refused(acme, "mail_defaults")
    assert fake_esp.messages == []


def test_send_defaults_is_not_a_tenant_option(tenants: Tenants, fake_esp: FakeESP) -> None:
    # Anymail applies send_defaults as message attributes: a tenant could bcc itself on every
    # message, or set any attribute at all.
    acme = set_mail(
        tenants.acme,
        mail_options={**acme_options(fake_esp), "send_defaults": {"bcc": ["spy@example.com"]}},
    )
    assert "option 'send_defaults' may not be set by a tenant" in refused(acme, "mail_options")
    assert fake_esp.messages == []


# -- header injection ----------------------------------------------------------------------

#: Every line separator Python's ``str.splitlines()`` honours (and so the email package), + NUL.
SEPARATORS = [
    "\n",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
]


def _defaults_with(field: str, separator: str) -> dict[str, Any]:
    injected = f"x@acme.example{separator}Bcc: victim@example.com"
    return {
        "from_email": {"from_email": injected},
        "reply_to": {"reply_to": ["ok@acme.example", injected]},
        "header value": {"headers": {"X-Campaign": injected}},
        "header name": {"headers": {f"X-Campaign{separator}Bcc": "victim@example.com"}},
        "tags": {"tags": [injected]},
    }[field]


@pytest.mark.parametrize("separator", SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
@pytest.mark.parametrize("field", ["from_email", "reply_to", "header value", "header name", "tags"])
def test_every_line_separator_in_a_header_default_is_refused(
    tenants: Tenants, fake_esp: FakeESP, field: str, separator: str
) -> None:
    acme = tenants.acme
    # In memory only: PostgreSQL's jsonb cannot even store NUL (the encrypted options can).
    acme.mail_defaults = _defaults_with(field, separator)
    assert "contains a line break (header injection)" in refused(acme, "mail_defaults")
    assert fake_esp.messages == []


@pytest.mark.parametrize("separator", SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
@pytest.mark.parametrize("option", ["sender_domain", "api_url", "api_key"])
def test_every_line_separator_in_an_option_is_refused(
    tenants: Tenants, fake_esp: FakeESP, option: str, separator: str
) -> None:
    options = acme_options(fake_esp)
    options[option] = f"{options[option]}{separator}x"
    acme = set_mail(tenants.acme, mail_options=options)
    assert f"option {option!r} contains control characters" in refused(acme, "mail_options")
    assert fake_esp.messages == []


def test_a_tab_in_a_header_default_is_still_fine(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = set_mail(tenants.acme, mail_defaults={"headers": {"X-Campaign": "spring\tsale"}})
    assert mailer(tenant=acme).send_messages([message()]) == 1
