"""Every tenant connection has a bounded connect and read timeout (issue 8, item 7).

A tenant host that accepts TCP and never answers must not pin the sending thread: the tenant's own
timeout applies, else ``TENANTMAIL["TIMEOUT"]``, and never more than ``TENANTMAIL["MAX_TIMEOUT"]``.
The black hole is a real loopback socket that listens (the kernel completes the handshake) but
never accepts, reads or answers.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMessage

from tenantmail import mailer
from tenantmail.conf import load_settings
from tenantmail.exceptions import TenantMailConfigurationError
from tests.conftest import ACME_KEY, HOOLI_PASSWORD, HOOLI_USER, Tenants

#: How long a test waits for a send before calling it hung (the bug this file is about).
HUNG = 10.0


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        host, port = listener.getsockname()
        yield host, port


def send_in_thread(send: Callable[[], object]) -> tuple[BaseException | None, float]:
    """Run ``send`` on a worker thread; fail the test (rather than hang it) if it never returns."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            send()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HUNG)
    assert outcome, f"the send was still blocked after {HUNG:g}s: no timeout applied"
    return outcome[0], time.monotonic() - started


def message() -> EmailMessage:
    return EmailMessage("hi", "body", "from@example.com", ["to@example.com"])


def timeouts(settings: Any, timeout: float, max_timeout: float) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "TIMEOUT": timeout, "MAX_TIMEOUT": max_timeout}


def smtp_black_hole(tenants: Tenants, black_hole: tuple[str, int], **extra: Any) -> None:
    host, port = black_hole
    tenants.hooli.mail_options = {
        "host": host,
        "port": port,
        "username": HOOLI_USER,
        "password": HOOLI_PASSWORD,
        **extra,
    }
    tenants.hooli.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.hooli.save()


def http_black_hole(tenants: Tenants, black_hole: tuple[str, int], **extra: Any) -> None:
    host, port = black_hole
    tenants.acme.mail_options = {
        "api_key": ACME_KEY,
        "sender_domain": "mg.acme.example",
        "api_url": f"http://{host}:{port}/v3/",
        **extra,
    }
    tenants.acme.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.acme.save()


def test_an_smtp_host_that_never_answers_times_out_at_the_platform_default(
    tenants: Tenants, black_hole: tuple[str, int], settings: Any
) -> None:
    timeouts(settings, 0.3, 30)
    smtp_black_hole(tenants, black_hole)  # no timeout of its own
    error, elapsed = send_in_thread(lambda: mailer(tenant=tenants.hooli).send_messages([message()]))
    # smtplib reports a read timeout as "Connection unexpectedly closed: timed out".
    assert isinstance(error, TimeoutError | smtplib.SMTPServerDisconnected)
    assert "timed out" in str(error)
    assert elapsed < 5


def test_an_smtp_tenant_cannot_raise_its_timeout_above_the_cap(
    tenants: Tenants, black_hole: tuple[str, int], settings: Any
) -> None:
    timeouts(settings, 0.2, 0.3)
    smtp_black_hole(tenants, black_hole, timeout=3600)
    error, elapsed = send_in_thread(lambda: mailer(tenant=tenants.hooli).send_messages([message()]))
    # smtplib reports a read timeout as "Connection unexpectedly closed: timed out".
    assert isinstance(error, TimeoutError | smtplib.SMTPServerDisconnected)
    assert "timed out" in str(error)
    assert elapsed < 5


@pytest.mark.parametrize("own", [{}, {"requests_timeout": 3600}, {"timeout": 3600}])
def test_an_esp_endpoint_that_never_answers_times_out(
    tenants: Tenants, black_hole: tuple[str, int], settings: Any, own: dict[str, Any]
) -> None:
    timeouts(settings, 0.2, 0.3)
    http_black_hole(tenants, black_hole, **own)
    error, elapsed = send_in_thread(lambda: mailer(tenant=tenants.acme).send_messages([message()]))
    assert isinstance(error, AnymailAPIError)
    assert isinstance(error, requests.Timeout)
    assert elapsed < 5


def test_a_shorter_tenant_timeout_is_kept(
    tenants: Tenants, black_hole: tuple[str, int], settings: Any
) -> None:
    timeouts(settings, 5, 30)
    http_black_hole(tenants, black_hole, requests_timeout=0.2)
    error, elapsed = send_in_thread(lambda: mailer(tenant=tenants.acme).send_messages([message()]))
    assert isinstance(error, requests.Timeout)
    assert elapsed < 4


@pytest.mark.parametrize("value", [0, -1, float("inf")])
def test_a_tenant_timeout_that_is_not_positive_is_a_configuration_error(
    tenants: Tenants, value: float
) -> None:
    tenants.hooli.mail_options = {**tenants.hooli.mail_options, "timeout": value}
    tenants.hooli.confirm_mail_endpoint_change()  # a test moving the endpoint on purpose
    tenants.hooli.save()
    with pytest.raises(TenantMailConfigurationError, match="'timeout'") as raised:
        mailer(tenant="hooli", fail_silently=True).send_messages([message()])
    assert (raised.value.tenant, raised.value.setting) == ("hooli", "mail_options")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"TIMEOUT": 0}, "TIMEOUT"),
        ({"TIMEOUT": "5"}, "TIMEOUT"),
        ({"MAX_TIMEOUT": -1}, "MAX_TIMEOUT"),
        ({"TIMEOUT": 60, "MAX_TIMEOUT": 30}, "TIMEOUT"),
        ({"BLOCK_PRIVATE_ENDPOINTS": "yes"}, "BLOCK_PRIVATE_ENDPOINTS"),
    ],
)
def test_bad_timeout_settings_are_refused(settings: Any, values: dict[str, Any], key: str) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, **values}
    with pytest.raises(TenantMailConfigurationError) as raised:
        load_settings()
    assert raised.value.setting == f'TENANTMAIL["{key}"]'


def test_the_defaults_are_bounded(settings: Any) -> None:
    s = load_settings()
    assert (s.timeout, s.max_timeout, s.block_private_endpoints) == (10.0, 30.0, False)
