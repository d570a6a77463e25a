"""Faults at the ESP: errors name the tenant, nothing is resent blindly, nothing leaks."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator

import pytest
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMessage
from django.db.models import QuerySet
from django_tenants.utils import schema_context

from tenantmail import mailer
from tenantmail import pool as pool_module
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, Tenants, acme_options
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db


def message(subject: str = "s") -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"])


def notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


@pytest.fixture
def fast_timeout(tenants: Tenants, fake_esp: FakeESP) -> Iterator[Client]:
    acme = tenants.acme
    acme.mail_options = {**acme_options(fake_esp), "timeout": 0.3}
    acme.save()
    yield acme
    fake_esp.delay = 0.0


@pytest.mark.parametrize("status", [500, 429, 401, 403])
def test_esp_error_is_raised_with_the_tenant_named(
    status: int, tenants: Tenants, fake_esp: FakeESP
) -> None:
    discarded = pool_module.stats().discarded
    fake_esp.fail_next(status)
    with pytest.raises(AnymailAPIError) as raised:
        mailer(tenant=tenants.acme).send_messages([message()])
    assert raised.value.status_code == status
    assert "tenant 'acme'" in notes(raised.value)
    assert ACME_KEY not in str(raised.value) + notes(raised.value)
    assert pool_module.stats().discarded == discarded + 1
    # The discarded connection is not reused; the next send opens a new one and succeeds.
    assert mailer(tenant=tenants.acme).send_messages([message("after")]) == 1
    assert [m.subject for m in fake_esp.wait_for(1)] == ["after"]


def test_fail_silently_swallows_esp_errors_and_logs_them(
    tenants: Tenants, fake_esp: FakeESP, caplog: pytest.LogCaptureFixture
) -> None:
    fake_esp.fail_next(500)
    with caplog.at_level(logging.WARNING, logger="tenantmail"):
        sent = mailer(tenant=tenants.acme, fail_silently=True).send_messages([message()])
    assert sent == 0
    assert "'acme'" in caplog.text
    assert ACME_KEY not in caplog.text
    assert fake_esp.messages == []


def test_unauthorized_drops_cached_tenant_so_a_rotated_key_is_used_next(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    with schema_context("acme"):
        mailer().send_messages([message("warm the cache")])
    # Rotate the key the way another process would: no post_save and no TenantMailQuerySet
    # invalidation in this process (a plain QuerySet writes the row).
    QuerySet(Client).filter(pk=tenants.acme.pk).update(
        mail_options=acme_options(fake_esp, api_key="key-acme-rotated-44444444")
    )
    with schema_context("acme"):
        mailer().send_messages([message("stale key still cached")])
        fake_esp.fail_next(401)
        with pytest.raises(AnymailAPIError):
            mailer().send_messages([message("rejected")])
        mailer().send_messages([message("new key")])
    credentials = {m.subject: m.credential for m in fake_esp.wait_for(3)}
    assert credentials == {
        "warm the cache": ACME_KEY,
        "stale key still cached": ACME_KEY,  # within TENANT_CACHE_SECONDS, as documented
        "new key": "key-acme-rotated-44444444",
    }


def test_slow_reply_times_out_and_is_not_resent(fast_timeout: Client, fake_esp: FakeESP) -> None:
    fake_esp.delay = 1.0
    with pytest.raises(AnymailAPIError) as raised:
        mailer(tenant=fast_timeout).send_messages([message("slow")])
    assert "timed out" in str(raised.value).lower() or "timeout" in repr(raised.value).lower()
    # The request did reach the ESP (it answers late): exactly one copy, never a retry.
    (received,) = fake_esp.wait_for(1, timeout=5)
    assert received.subject == "slow"
    fake_esp.delay = 0.0
    time.sleep(0.2)
    assert len(fake_esp.messages) == 1
    assert mailer(tenant=fast_timeout).send_messages([message("next")]) == 1


def test_connection_reset_is_an_error_and_not_retried(tenants: Tenants, fake_esp: FakeESP) -> None:
    fake_esp.reset_next()
    with pytest.raises(AnymailAPIError) as raised:
        mailer(tenant=tenants.acme).send_messages([message()])
    assert "tenant 'acme'" in notes(raised.value)
    assert fake_esp.messages == []
    assert len(fake_esp.rejected) == 1  # one attempt reached the server: no silent retry


def test_server_closing_idle_keepalive_is_detected_before_reuse(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    discarded = pool_module.stats().discarded
    fake_esp.close_idle_after = 0.2
    try:
        backend = mailer(tenant=tenants.acme)
        assert backend.send_messages([message("first")]) == 1
        time.sleep(0.5)  # the server hangs up the idle keep-alive connection meanwhile
        assert backend.send_messages([message("second")]) == 1
    finally:
        fake_esp.close_idle_after = None
    assert [m.subject for m in fake_esp.wait_for(2)] == ["first", "second"]
    assert fake_esp.connections_opened == 2
    assert pool_module.stats().discarded == discarded


def _open_fds(esp: FakeESP) -> int:
    """This process' open descriptors once the (in-process) fake ESP has hung up on us."""
    deadline = time.monotonic() + 5
    while esp.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_no_file_descriptors_leak_over_many_faulty_sends(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    backend = mailer(tenant=tenants.acme)
    backend.send_messages([message("warm")])  # imports, pool, first socket
    pool_module.clear()
    before = _open_fds(fake_esp)
    failures = 0
    for i in range(1000):
        if i % 2:
            fake_esp.fail_next(500)
        else:
            fake_esp.reset_next()
        try:
            backend.send_messages([message()])
        except AnymailAPIError:
            failures += 1
    pool_module.clear()
    assert failures == 1000
    assert _open_fds(fake_esp) <= before
