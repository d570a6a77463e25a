"""Suppression "drop" works on the send's copies: the caller's message keeps its recipients.

Sends go through TenantBackend to the loopback fake ESP; the pool's counters show whether a
connection was checked out.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.mail import EmailMessage

from tenantmail import mailer, pool, suppression
from tenantmail.testing import FakeESP
from tests.conftest import Tenants

pytestmark = pytest.mark.django_db


@pytest.fixture
def drop(settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "SUPPRESSION": "drop"}


def test_drop_leaves_the_callers_message_unchanged(
    tenants: Tenants, fake_esp: FakeESP, drop: None
) -> None:
    # Regression: "drop" removed the suppressed addresses from the caller's own lists, so a
    # message kept (or re-sent as another tenant, or to another tenant's list) lost them.
    suppression.suppress("acme", "gone@example.com")
    to, cc = ["Gone <gone@example.com>", "ok@example.com"], ["gone@example.com"]
    message = EmailMessage("s", "b", to=to, cc=cc)
    to, cc = message.to, message.cc  # EmailMessage keeps its own lists
    assert mailer(tenant="acme").send_messages([message]) == 1
    [received] = fake_esp.wait_for(1)
    assert received.to == ["ok@example.com"]  # every envelope recipient
    assert message.to is to
    assert to == ["Gone <gone@example.com>", "ok@example.com"]
    assert message.cc is cc
    assert cc == ["gone@example.com"]
    assert message.tenantmail_suppressed == [  # type: ignore[attr-defined]
        "Gone <gone@example.com>",
        "gone@example.com",
    ]
    # Another tenant's list does not have the address: the same object reaches it whole.
    fake_esp.clear()
    assert mailer(tenant="globex").send_messages([message]) == 1
    [received] = fake_esp.wait_for(1)
    assert sorted(received.to) == ["gone@example.com", "gone@example.com", "ok@example.com"]


def test_a_batch_left_empty_checks_out_no_connection(
    tenants: Tenants, fake_esp: FakeESP, drop: None
) -> None:
    # Regression: the emptied batch still checked out (and, cold, opened) a connection.
    suppression.suppress("acme", "gone@example.com")
    pool.clear()
    before = pool.stats()
    message = EmailMessage("s", "b", to=["gone@example.com"])
    assert mailer(tenant="acme").send_messages([message]) == 0
    after = pool.stats()
    assert (after.hits, after.misses, after.opened) == (before.hits, before.misses, before.opened)
    assert fake_esp.messages == []
    assert message.to == ["gone@example.com"]
