"""The warm send (backends._send_warm) does exactly what the general path does, in fewer frames.

Each test runs twice: ``warm`` -- a request-context send with nothing hooked, which the warm send
serves -- and ``general`` -- the same send with a ``post_send`` receiver connected, which makes
``TenantBackend`` take the general path -- and checks the same outcome both ways, against the
real fake ESP. A spy on ``TenantBackend._send`` (it still runs) shows which path sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import django
import pytest
from anymail.exceptions import AnymailAPIError
from django.conf import settings
from django.core.mail import EmailMessage, mail_admins
from django.db import connection

import tenantmail.pool as pool_module
from tenantmail import fastpath
from tenantmail.backends import TenantBackend
from tenantmail.signals import post_send
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, PLATFORM_KEY, Tenants


def _receiver(**kwargs: Any) -> None:
    pass


@pytest.fixture(params=["warm", "general"])
def path(request: pytest.FixtureRequest, tenants: Tenants) -> Iterator[str]:
    """Acme's request context, warmed up (resolved once), and the path its sends should take."""
    fastpath.forget()
    connection.set_tenant(tenants.acme)
    for _ in range(2):  # resolved, then a memo hit that the shortcut remembers
        assert TenantBackend().send_messages([message("warm-up")]) == 1
    if request.param == "general":
        post_send.connect(_receiver)
    try:
        yield request.param
    finally:
        post_send.disconnect(_receiver)
        fastpath.forget()


@pytest.fixture
def general_sends() -> Iterator[mock.MagicMock]:
    with mock.patch.object(
        TenantBackend, "_send", autospec=True, side_effect=TenantBackend._send
    ) as spy:
        yield spy


def message(subject: str = "Hello", **kwargs: Any) -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"], **kwargs)


def test_the_tenants_account_defaults_and_trace_and_the_caller_keeps_its_message(
    path: str, general_sends: mock.MagicMock, fake_esp: FakeESP
) -> None:
    sent = message()
    assert TenantBackend().send_messages([sent]) == 1
    assert general_sends.call_count == (0 if path == "warm" else 1)
    received = fake_esp.messages[-1]
    assert (received.credential, received.from_email) == (ACME_KEY, "hello@acme.example")
    assert received.metadata["tenant"] == "acme"
    # The caller's object: the send's status handed back, the defaults never.
    assert sent.anymail_status.status == {"queued"}
    assert sent.anymail_status.message_id == received.message_id
    assert sent.from_email == settings.DEFAULT_FROM_EMAIL  # as Django filled it in
    assert getattr(sent, "metadata", {}) == {}


def test_the_status_response_the_caller_gets_is_scrubbed(path: str) -> None:
    sent = message()
    TenantBackend().send_messages([sent])
    request = sent.anymail_status.esp_response.request
    assert "Authorization" not in request.headers
    assert request.body is None


def test_an_esp_error_is_raised_with_its_type_and_note_and_the_connection_discarded(
    path: str, fake_esp: FakeESP
) -> None:
    discarded = pool_module.stats().discarded
    fake_esp.fail_next(500)
    with pytest.raises(AnymailAPIError) as raised:
        TenantBackend().send_messages([message()])
    assert any("tenant 'acme'" in note for note in raised.value.__notes__)
    assert ACME_KEY not in str(raised.value)
    assert pool_module.stats().discarded == discarded + 1
    assert TenantBackend().send_messages([message("after")]) == 1  # a new connection works


def test_fail_silently_returns_0_and_logs_a_warning(
    path: str, fake_esp: FakeESP, caplog: pytest.LogCaptureFixture
) -> None:
    fake_esp.fail_next(500)
    with caplog.at_level(logging.WARNING, logger="tenantmail"):
        assert TenantBackend(fail_silently=True).send_messages([message()]) == 0
    assert "failed silently" in caplog.text


def test_the_debug_log_line_names_the_tenant(path: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="tenantmail"):
        TenantBackend().send_messages([message()])
    assert "sent 1 of 1 message(s) for tenant 'acme'" in caplog.text


def test_server_mail_in_a_tenant_request_still_leaves_through_the_platform_account(
    path: str, fake_esp: FakeESP, settings: Any
) -> None:
    # Django 5.2 reads (name, address) pairs; 6.0 deprecates them for plain addresses.
    settings.ADMINS = (
        ["ops@saas.example"] if django.VERSION >= (6, 0) else [("Ops", "ops@saas.example")]
    )
    settings.SERVER_EMAIL = "server@saas.example"
    TenantBackend().send_messages([message()])  # warm again after the settings change
    mail_admins("boom", "traceback")
    received = fake_esp.messages[-1]
    assert received.subject.endswith("boom")
    assert received.credential == PLATFORM_KEY


def test_the_same_message_sent_twice_gets_two_statuses_and_no_defaults(path: str) -> None:
    sent = message()
    backend = TenantBackend()
    backend.send_messages([sent])
    first = sent.anymail_status.message_id
    backend.send_messages([sent])
    assert sent.anymail_status.message_id != first
    assert getattr(sent, "metadata", {}) == {}
