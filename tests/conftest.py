"""Shared fixtures: a real PostgreSQL with django-tenants, a loopback fake ESP, a real SMTP server.

Tenants are created once per session (each creates a real schema, which is slow); every test runs
in a transaction, so changes a test makes to them are rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import get_public_schema_name

from tenantmail import pool as pool_module
from tenantmail.tenancy import tenant_cache
from tenantmail.testing import FakeESP, FakeSMTP
from tests import settings as test_settings
from tests.tenants_app.models import Client, Domain

PLATFORM_KEY = "key-platform-0000000000000000"
ACME_KEY = "key-acme-1111111111111111111"
GLOBEX_TOKEN = "pm-globex-22222222222222222"
HOOLI_USER, HOOLI_PASSWORD = "hooli", "hooli-smtp-3333333333"


@dataclass(frozen=True)
class Tenants:
    acme: Client  # Mailgun sub-account
    globex: Client  # Postmark server
    initech: Client  # no config: platform fallback
    hooli: Client  # its own SMTP server


@pytest.fixture(scope="session")
def fake_esp() -> Iterator[FakeESP]:
    with FakeESP() as esp:
        yield esp


@pytest.fixture(scope="session")
def fake_smtp() -> Iterator[FakeSMTP]:
    with FakeSMTP() as smtp:
        yield smtp


def acme_options(esp: FakeESP, api_key: str = ACME_KEY) -> dict[str, Any]:
    return {"api_key": api_key, "sender_domain": "mg.acme.example", "api_url": esp.mailgun_api_url}


def globex_options(esp: FakeESP) -> dict[str, Any]:
    return {"server_token": GLOBEX_TOKEN, "api_url": esp.postmark_api_url}


def hooli_options(smtp: FakeSMTP) -> dict[str, Any]:
    return {
        "host": smtp.host,
        "port": smtp.port,
        "username": HOOLI_USER,
        "password": HOOLI_PASSWORD,
        "timeout": 5,
    }


def make_tenant(schema: str, **fields: Any) -> Client:
    tenant = Client(schema_name=schema, name=schema.title(), **fields)
    tenant.save(verbosity=0)
    Domain.objects.create(domain=f"{schema}.localhost", tenant=tenant, is_primary=True)
    return tenant


@pytest.fixture(scope="session")
def django_db_setup(
    django_db_setup: None, django_db_blocker: Any, fake_esp: FakeESP, fake_smtp: FakeSMTP
) -> Tenants:
    with django_db_blocker.unblock():
        public = Client(schema_name=get_public_schema_name(), name="Platform")
        public.save(verbosity=0)
        Domain.objects.create(domain="localhost", tenant=public, is_primary=True)
        tenants = Tenants(
            acme=make_tenant(
                "acme",
                mail_backend="mailgun",
                mail_options=acme_options(fake_esp),
                mail_defaults={"from_email": "hello@acme.example"},
            ),
            globex=make_tenant(
                "globex", mail_backend="postmark", mail_options=globex_options(fake_esp)
            ),
            initech=make_tenant("initech"),
            hooli=make_tenant("hooli", mail_backend="smtp", mail_options=hooli_options(fake_smtp)),
        )
        connection.set_schema_to_public()
    return tenants


@pytest.fixture
def tenants(django_db_setup: Tenants, db: None) -> Tenants:
    # Fresh instances per test: a test may mutate them, and the transaction rolls the DB back.
    return Tenants(
        **{
            name: Client.objects.get(pk=getattr(django_db_setup, name).pk)
            for name in ("acme", "globex", "initech", "hooli")
        }
    )


@pytest.fixture(autouse=True)
def _isolated_mail_state(
    request: pytest.FixtureRequest, fake_esp: FakeESP, fake_smtp: FakeSMTP, settings: Any
) -> Iterator[None]:
    """Every test starts with an empty pool, tenant cache and mailbox, on the public schema."""
    # Django's test setup swaps every mailer for locmem; these tests are about the real route.
    if hasattr(test_settings, "MAILERS"):
        settings.MAILERS = test_settings.MAILERS
    else:
        settings.EMAIL_BACKEND = test_settings.EMAIL_BACKEND
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {
            "BACKEND": "mailgun",
            "OPTIONS": {
                "api_key": PLATFORM_KEY,
                "sender_domain": "mg.saas.example",
                "api_url": fake_esp.mailgun_api_url,
            },
        },
    }
    pool_module.clear()
    tenant_cache.invalidate()
    fake_esp.clear()
    fake_smtp.clear()
    yield
    pool_module.clear()
    tenant_cache.invalidate()
    if "db" in request.fixturenames or "tenants" in request.fixturenames:
        connection.set_schema_to_public()
