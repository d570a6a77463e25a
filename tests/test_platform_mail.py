"""Platform mail never leaves through a tenant's account (issue 8, item 2).

Django's own server mail -- ``mail_admins()``, ``mail_managers()``, the ``AdminEmailHandler`` that
Django's ``DEFAULT_LOGGING`` puts on the ``django`` logger, ``BrokenLinkEmailsMiddleware`` -- sent
during acme's request reaches the platform account: the platform key and sending domain, never
acme's, and no tenant trace. No extra configuration: the test settings' LOGGING leaves Django's
default ``mail_admins`` handler in place.
"""

from __future__ import annotations

import logging
from typing import Any

import django
import pytest
from django.core.mail import EmailMessage, mail_admins
from django.test import Client as HttpClient
from django.utils.log import AdminEmailHandler
from django_tenants.utils import schema_context

from tenantmail import mailer, sending_as
from tenantmail.platform_mail import is_server_mail
from tenantmail.testing import FakeESP, ReceivedMessage
from tests.conftest import ACME_KEY, PLATFORM_KEY, Tenants

pytestmark = pytest.mark.django_db

ADMIN = "ops@saas.example"
MANAGER = "sales@saas.example"
SERVER_EMAIL = "errors@saas.example"


@pytest.fixture(autouse=True)
def server_mail_settings(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.platform_urls"
    settings.SERVER_EMAIL = SERVER_EMAIL
    if django.VERSION >= (6, 0):
        settings.ADMINS, settings.MANAGERS = [ADMIN], [MANAGER]
    else:  # Django 5.2 reads (name, address) pairs
        settings.ADMINS, settings.MANAGERS = [("Ops", ADMIN)], [("Sales", MANAGER)]


def acme_request() -> HttpClient:
    return HttpClient(headers={"host": "acme.localhost"}, raise_request_exception=False)


def assert_platform(received: ReceivedMessage, to: str) -> None:
    assert received.credential == PLATFORM_KEY
    assert received.credential != ACME_KEY
    assert received.sender_domain == "mg.saas.example"
    assert received.from_email == SERVER_EMAIL
    assert received.to == [to]
    assert received.metadata == {}  # platform mail carries no tenant trace


def test_default_logging_admin_handler_is_active() -> None:
    """The premise: Django's DEFAULT_LOGGING handler is live although LOGGING omits it."""
    handlers = logging.getLogger("django").handlers
    assert any(isinstance(h, AdminEmailHandler) and h.name == "mail_admins" for h in handlers)


def test_server_error_in_a_tenant_request_reaches_the_platform(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    response = acme_request().get("/boom/")
    assert response.status_code == 500
    (received,) = fake_esp.wait_for(1)
    assert_platform(received, ADMIN)
    assert "RuntimeError" in received.subject or "/boom/" in received.subject


def test_too_many_post_fields_in_a_tenant_request_reaches_the_platform(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    response = acme_request().post("/form/", {f"f{i}": "x" for i in range(10)})
    assert response.status_code == 400  # any anonymous visitor can do this
    (received,) = fake_esp.wait_for(1)
    assert_platform(received, ADMIN)
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in received.subject


def test_mail_admins_and_mail_managers_in_a_tenant_request(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    assert acme_request().get("/notify/").content == b"ok"
    received = {m.subject: m for m in fake_esp.wait_for(2)}
    assert_platform(received["[Django] admins, from a tenant request"], ADMIN)
    assert_platform(received["[Django] managers, from a tenant request"], MANAGER)


def test_broken_link_mail_in_a_tenant_request(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.middleware.common.BrokenLinkEmailsMiddleware",
    ]
    response = acme_request().get("/missing/", headers={"referer": "http://acme.localhost/a/"})
    assert response.status_code == 404
    (received,) = fake_esp.wait_for(1)
    assert_platform(received, MANAGER)
    assert "Broken" in received.subject


def test_mixed_batch_is_split(tenants: Tenants, fake_esp: FakeESP) -> None:
    server = EmailMessage("[Django] alert", "body", SERVER_EMAIL, [ADMIN])
    customer = EmailMessage("order", "body", to=["customer@example.com"])
    with sending_as(tenants.acme):
        assert mailer().send_messages([server, customer]) == 2
    received = {m.subject: m for m in fake_esp.wait_for(2)}
    assert_platform(received["[Django] alert"], ADMIN)
    assert received["order"].credential == ACME_KEY


def test_only_the_exact_shape_is_platform_mail(tenants: Tenants) -> None:
    def shaped(**changes: Any) -> EmailMessage:
        fields: dict[str, Any] = {
            "subject": "[Django] x",
            "body": "b",
            "from_email": SERVER_EMAIL,
            "to": [ADMIN],
        }
        return EmailMessage(**{**fields, **changes})

    assert is_server_mail(shaped())
    assert is_server_mail(shaped(to=[ADMIN], cc=[MANAGER]))
    assert not is_server_mail(shaped(from_email="hello@acme.example"))
    assert not is_server_mail(shaped(to=[ADMIN, "customer@example.com"]))
    assert not is_server_mail(shaped(bcc=["spy@example.com"]))
    assert not is_server_mail(shaped(subject="no prefix"))
    assert not is_server_mail(shaped(to=[]))


def test_server_mail_with_no_admins_is_not_recognised(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.ADMINS, settings.MANAGERS = [], []
    message = EmailMessage("[Django] x", "b", SERVER_EMAIL, ["customer@example.com"])
    assert not is_server_mail(message)
    with schema_context("acme"):
        mailer().send_messages([message])
    assert fake_esp.wait_for(1)[0].credential == ACME_KEY


def test_server_mail_from_a_worker_thread_is_not_unresolved(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    """mail_admins() needs no tenant: it must not trip UNRESOLVED="raise"."""
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    mail_admins("no tenant here", "body")
    assert_platform(fake_esp.wait_for(1)[0], ADMIN)
