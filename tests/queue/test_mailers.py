"""Review leftovers: which backend a row goes through, what its errors mask, where it reads.

- a ``MAILERS`` alias pinned to another tenant is refused at enqueue and in the worker;
- overrides together with a mailer, or a mailer before Django 6.1, are refused at enqueue;
- ``describe()`` masks with the account of the alias the row names;
- an error of the rate limiter itself is recorded on the row;
- the backlog count reads the tenant database alias, whatever a router says.
"""

from __future__ import annotations

import socket
from typing import Any

import django
import pytest
from django.core.mail import EmailMessage

from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.models import OutboxMessage
from tenantmail.queue import QueuedBackend, enqueue
from tenantmail.queue.worker import claim, deliver, describe
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY
from tests.queue.conftest import FAST_QUEUE

pytestmark = pytest.mark.usefixtures("queue_settings")

Status = OutboxMessage.Status
needs_mailers = pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
#: A credential only the MAILERS alias holds (never the tenant's own).
ALIAS_KEY = "key-alias-only-9999999999999"


def _message(subject: str = "s") -> EmailMessage:
    return EmailMessage(subject, "b", to=["t@example.com"])


@pytest.fixture
def mailers(settings: Any, fake_esp: FakeESP) -> None:
    settings.MAILERS = {
        **settings.MAILERS,
        "tenants": {"BACKEND": "tenantmail.backends.TenantBackend"},
        "acme_only": {
            "BACKEND": "tenantmail.backends.TenantBackend",
            "OPTIONS": {"tenant": "acme"},
        },
        "platform_only": {
            "BACKEND": "tenantmail.backends.TenantBackend",
            "OPTIONS": {"tenant": "public"},
        },
        "own_key": {
            "BACKEND": "tenantmail.backends.TenantBackend",
            "OPTIONS": {"api_key": ALIAS_KEY},
        },
    }


@needs_mailers
@pytest.mark.usefixtures("mailers")
def test_a_mailer_pinned_to_another_tenant_is_refused_at_enqueue(tenants: Any) -> None:
    with pytest.raises(TenantMailConfigurationError, match="pinned to tenant 'acme'") as caught:
        enqueue(_message(), tenant="globex", mailer="acme_only")
    assert "globex" in str(caught.value)
    with pytest.raises(TenantMailConfigurationError, match="pinned to tenant '\\(platform\\)'"):
        QueuedBackend(tenant="acme", mailer="platform_only").send_messages([_message()])
    with pytest.raises(TenantMailConfigurationError, match="pinned to tenant 'acme'"):
        enqueue(_message(), tenant="public", mailer="acme_only")
    assert not OutboxMessage.objects.exists()
    # Pinned to the same tenant (or to the platform, for platform mail): fine.
    assert enqueue(_message(), tenant="acme", mailer="acme_only").mailer == "acme_only"
    assert enqueue(_message(), tenant="public", mailer="platform_only").tenant_schema == ""


@needs_mailers
@pytest.mark.usefixtures("mailers")
def test_a_mailer_pinned_elsewhere_after_enqueue_is_refused_in_the_worker(
    tenants: Any, settings: Any, fake_esp: FakeESP
) -> None:
    row = enqueue(_message(), tenant="globex", mailer="tenants")
    settings.MAILERS = {**settings.MAILERS, "tenants": settings.MAILERS["acme_only"]}
    assert deliver(row.pk) == "failed"
    row.refresh_from_db()
    assert "pinned to tenant 'acme'" in row.last_error
    assert fake_esp.messages == []


@needs_mailers
@pytest.mark.usefixtures("mailers")
def test_overrides_together_with_a_mailer_are_refused(tenants: Any) -> None:
    with pytest.raises(TenantMailConfigurationError, match="cannot be combined with mailer"):
        QueuedBackend(mailer="tenants", requests_timeout=7).send_messages([_message()])
    assert not OutboxMessage.objects.exists()


@pytest.mark.skipif(django.VERSION >= (6, 1), reason="before MAILERS")
def test_a_mailer_before_django_61_is_refused_at_enqueue(tenants: Any) -> None:
    with pytest.raises(TenantMailConfigurationError, match=r"needs Django 6\.1's MAILERS"):
        enqueue(_message(), tenant="acme", mailer="x")
    assert not OutboxMessage.objects.exists()


@needs_mailers
@pytest.mark.usefixtures("mailers")
def test_describe_masks_the_credential_of_the_rows_mailer_alias(tenants: Any) -> None:
    row = enqueue(_message(), tenant="acme", mailer="own_key")
    text = describe(RuntimeError(f"rejected {ALIAS_KEY} and {ACME_KEY}"), row)
    assert ALIAS_KEY not in text
    assert f"…{ALIAS_KEY[-4:]}" in text
    plain = enqueue(_message(), tenant="acme")
    assert ACME_KEY not in describe(RuntimeError(f"rejected {ACME_KEY}"), plain)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_error_of_the_rate_limiter_is_recorded_on_the_row(
    tenants: Any, settings: Any, fake_esp: FakeESP
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "QUEUE": {
            **FAST_QUEUE,
            "RATE_LIMIT": 5,
            "RATE_LIMIT_STORAGE": f"redis://127.0.0.1:{_closed_port()}",
        },
    }
    row = enqueue(_message(), tenant="acme")
    assert deliver(row.pk) == "retrying"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.claim_token) == (Status.QUEUED, 1, "")
    assert "ConnectionError" in row.last_error
    assert fake_esp.messages == []
    assert claim(row.pk) is None  # not due yet: it waits for its backoff, not stuck `sending`


class _ReplicaRouter:
    """Sends reads to a replica alias that does not exist: any read not pinned with .using()
    to the tenant database fails loudly instead of reading stale (or other) data."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "replica"


def test_the_backlog_is_counted_on_the_tenant_database(tenants: Any, settings: Any) -> None:
    settings.DATABASE_ROUTERS = [*settings.DATABASE_ROUTERS, f"{__name__}._ReplicaRouter"]
    row = enqueue(_message(), tenant="acme")
    assert row.priority == 0
    assert OutboxMessage.objects.using("default").filter(tenant_schema="acme").count() == 1
