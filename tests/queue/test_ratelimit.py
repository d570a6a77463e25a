"""Per-tenant rate limits: database GCRA by default, the `limits` library when configured."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.utils import timezone

from tenantmail.models import OutboxMessage
from tenantmail.queue import enqueue
from tenantmail.queue.ratelimit import limit_for, reserve
from tenantmail.queue.worker import deliver
from tests.queue.conftest import FAST_QUEUE, deliveries


@pytest.fixture
def limited(settings: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "QUEUE": {**FAST_QUEUE, "RATE_LIMIT": 2, "TENANT_RATE_LIMITS": {"globex": None}},
    }


def test_no_limit_costs_nothing(tenants: Any, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        assert reserve("acme") == 0.0


@pytest.mark.usefixtures("limited")
def test_platform_default_and_per_tenant_override(tenants: Any) -> None:
    assert limit_for("acme") == 2
    assert limit_for("") == 2
    assert limit_for("globex") is None
    assert [reserve("acme") for _ in range(2)] == [0.0, 0.0]  # a burst of one second's worth
    wait = reserve("acme")
    assert 0.3 < wait <= 0.5  # the next slot opens 1/2 s after the first
    assert reserve("") == 0.0  # the platform's own bucket
    assert all(reserve("globex") == 0.0 for _ in range(10))


@pytest.mark.usefixtures("limited")
def test_a_rate_limited_message_is_deferred_without_counting_an_attempt(tenants: Any) -> None:
    reserve("acme")
    reserve("acme")
    row = enqueue(EmailMessage("s", "b", to=["t@example.com"]), tenant="acme")
    before = timezone.now()
    assert deliver(row.pk) == "deferred"
    row.refresh_from_db()
    assert (row.status, row.attempts) == (OutboxMessage.Status.QUEUED, 0)
    assert before < row.next_attempt_at < before + datetime.timedelta(seconds=1)
    assert deliveries().get().run_after == row.next_attempt_at


def test_the_limits_library_backs_the_limit_when_configured(tenants: Any, settings: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "QUEUE": {"RATE_LIMIT": 3, "RATE_LIMIT_STORAGE": "memory://"},
    }
    assert [reserve("hooli") for _ in range(3)] == [0.0] * 3
    assert 0 < reserve("hooli") <= 1.0
