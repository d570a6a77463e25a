"""Each tenant's mail leaves with its own credentials; who is sending is found at send time."""

from __future__ import annotations

import warnings

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.test import Client as HttpClient
from django_tenants.utils import schema_context, tenant_context

from tenantmail import mailer, sending_as
from tenantmail.backends import TenantBackend
from tenantmail.exceptions import UnknownTenantError
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import (
    ACME_KEY,
    GLOBEX_TOKEN,
    HOOLI_PASSWORD,
    HOOLI_USER,
    PLATFORM_KEY,
    Tenants,
)

pytestmark = pytest.mark.django_db


def message(subject: str = "Hello") -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"])


def send_default(msg: EmailMessage) -> int:
    """msg.send() through the project's default mailer (MAILERS on 6.1, EMAIL_BACKEND before)."""
    return msg.send()


def test_each_tenant_uses_its_own_credentials(
    tenants: Tenants, fake_esp: FakeESP, fake_smtp: FakeSMTP
) -> None:
    for tenant in (tenants.acme, tenants.globex, tenants.initech, tenants.hooli):
        with tenant_context(tenant):
            assert send_default(message(f"from {tenant.schema_name}")) == 1
    send_default(message("from the public schema"))

    by_subject = {m.subject: m for m in fake_esp.wait_for(4)}
    assert by_subject["from acme"].esp == "mailgun"
    assert by_subject["from acme"].credential == ACME_KEY
    assert by_subject["from acme"].sender_domain == "mg.acme.example"
    assert by_subject["from acme"].metadata == {"tenant": "acme"}
    assert by_subject["from globex"].esp == "postmark"
    assert by_subject["from globex"].credential == GLOBEX_TOKEN
    assert by_subject["from globex"].metadata == {"tenant": "globex"}
    # initech has no config: the platform account, but still traced to the tenant.
    assert by_subject["from initech"].credential == PLATFORM_KEY
    assert by_subject["from initech"].metadata == {"tenant": "initech"}
    # Platform mail passes through untouched: no tenant metadata.
    assert by_subject["from the public schema"].credential == PLATFORM_KEY
    assert by_subject["from the public schema"].metadata == {}
    assert len(fake_esp.messages) == 4

    (smtp_message,) = fake_smtp.wait_for(1)
    assert smtp_message.subject == "from hooli"
    assert smtp_message.credential == f"{HOOLI_USER}:{HOOLI_PASSWORD}"


def test_tenant_defaults_fill_the_sender(tenants: Tenants, fake_esp: FakeESP) -> None:
    with tenant_context(tenants.acme):
        send_default(message())
    (received,) = fake_esp.wait_for(1)
    assert received.from_email == "hello@acme.example"


def test_schema_context_looks_the_tenant_up_by_schema_name(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    with schema_context("globex"):
        mailer().send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.credential == GLOBEX_TOKEN


def test_request_context_uses_the_middleware_tenant(tenants: Tenants, fake_esp: FakeESP) -> None:
    response = HttpClient(headers={"host": "acme.localhost"}).get("/send/")
    assert response.status_code == 200
    assert response.content == b"1"
    (received,) = fake_esp.wait_for(1)
    assert received.credential == ACME_KEY


def test_explicit_tenant_beats_sending_as_beats_connection(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    with tenant_context(tenants.initech), sending_as("globex"):
        mailer().send_messages([message("sending_as")])
        mailer(tenant=tenants.acme).send_messages([message("explicit instance")])
        mailer(tenant="acme").send_messages([message("explicit schema name")])
    credentials = {m.subject: m.credential for m in fake_esp.wait_for(3)}
    assert credentials == {
        "sending_as": GLOBEX_TOKEN,
        "explicit instance": ACME_KEY,
        "explicit schema name": ACME_KEY,
    }


def test_tenant_is_resolved_at_send_time_not_construction(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    backend = mailer()
    with tenant_context(tenants.acme):
        backend.send_messages([message("acme")])
    with tenant_context(tenants.globex):
        backend.send_messages([message("globex")])
    credentials = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert credentials == {"acme": ACME_KEY, "globex": GLOBEX_TOKEN}


def test_keyword_override_replaces_a_tenant_option(tenants: Tenants, fake_esp: FakeESP) -> None:
    with tenant_context(tenants.acme):
        mailer(api_key="key-override-99999999999").send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.credential == "key-override-99999999999"
    assert received.sender_domain == "mg.acme.example"  # the rest still comes from the tenant


def test_connection_argument_overrides_per_send(tenants: Tenants, fake_esp: FakeESP) -> None:
    with warnings.catch_warnings():
        # Django 6.1 deprecates get_connection()/connection= (a PendingDeprecationWarning aimed
        # at this test, which uses them on purpose): they must keep working meanwhile.
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        connection = (
            mail.get_connection("tenantmail.backends.TenantBackend", tenant="globex")
            if not hasattr(mail, "mailers")
            else TenantBackend(tenant="globex")
        )
        with tenant_context(tenants.acme):
            mail.send_mail("override", "body", None, ["x@example.com"], connection=connection)
    (received,) = fake_esp.wait_for(1)
    assert received.credential == GLOBEX_TOKEN


def test_unknown_schema_name_is_an_error_and_sends_nothing(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    with pytest.raises(UnknownTenantError, match="'nosuch'"):
        mailer(tenant="nosuch").send_messages([message()])
    with schema_context("nosuch"), pytest.raises(UnknownTenantError):
        mailer().send_messages([message()])
    assert fake_esp.messages == []


def test_public_schema_name_means_platform(tenants: Tenants, fake_esp: FakeESP) -> None:
    with tenant_context(tenants.acme):
        mailer(tenant="public").send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.credential == PLATFORM_KEY
