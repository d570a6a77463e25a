"""Verification at the edges: backends without a read-only check, odd answers, odd servers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail

from tenantmail.testing import FakeESP, FakeSMTP
from tenantmail.testing_accounts import AccountState, accounts
from tenantmail.verification import VerificationError, verify
from tests.conftest import Tenants
from tests.tenants_app.models import Client
from tests.test_subaccounts import as_subaccount, subaccounts
from tests.test_verification import STAFF, account, failed_at, move, staff, statuses

pytestmark = pytest.mark.django_db
__all__ = ["account", "staff", "subaccounts"]  # the fixtures, re-used


def test_a_backend_without_a_network_endpoint_is_checked_by_its_test_message(
    tenants: Tenants, settings: Any, staff: User
) -> None:
    locmem = "django.core.mail.backends.locmem.EmailBackend"
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["mailgun", locmem]}
    tenants.initech.mail_backend = locmem
    tenants.initech.save()
    report = verify(tenants.initech, send_to=STAFF)
    assert report.ok, report.line()
    assert statuses(report) == {
        "resolve": "ok",
        "connect": "skipped",
        "tls": "skipped",
        "authenticate": "skipped",
        "sender": "skipped",
        "test_message": "ok",
    }
    assert [m.to for m in mail.outbox] == [[STAFF]]


def test_an_esp_without_a_read_only_check_gets_connect_and_its_test_message(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    tenants.initech.mail_backend = "brevo"
    tenants.initech.mail_options = {
        "api_key": "xkeysib-initech-555555555555",
        "api_url": f"{fake_esp.base_url}brevo/v3/",
    }
    tenants.initech.save()
    report = verify(tenants.initech, send_to=STAFF)
    assert statuses(report)["connect"] == "ok"
    assert statuses(report)["authenticate"] == "skipped"
    assert statuses(report)["sender"] == "skipped"
    # With no read-only check, the test message is what proves the key works.
    assert statuses(report)["test_message"] == "ok"
    assert [(m.esp, m.credential, m.to) for m in fake_esp.messages] == [
        ("brevo", "xkeysib-initech-555555555555", [STAFF])
    ]
    # ... and where a refused key shows: by status only, never the body.
    fake_esp.fail_next(401, body='{"message": "key-canary-0452"}')
    report = verify(tenants.initech, send_to=STAFF, force=True)
    assert failed_at(report, "test_message") == (
        "initech: the test message was refused: Brevo answered 401"
    )
    assert "canary" not in report.line()


def test_an_esp_error_on_the_account_call_is_reported_by_status(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    fake_esp.fail_next(500, body='{"message": "internal-canary-0451"}')
    report = verify(tenants.acme)
    assert failed_at(report, "authenticate") == (
        "acme: Mailgun answered 500 to GET domains/mg.acme.example"
    )
    assert "canary" not in report.line()


def test_every_problem_is_counted_and_the_first_reported(tenants: Tenants) -> None:
    tenants.hooli.mail_options = {**tenants.hooli.mail_options, "port": "25", "use_tls": "yes"}
    tenants.hooli.confirm_mail_endpoint_change()
    tenants.hooli.save()
    reason = failed_at(verify(tenants.hooli), "resolve")
    assert reason == (
        "hooli: tenant 'hooli', mail_options: option 'port' must be int, got str (and 1 more: see "
        "tenantmail_check)"
    )


def test_a_tenant_without_a_row_is_not_verified(tenants: Tenants) -> None:
    ghost = Client(pk=10**9, schema_name="ghost", name="Ghost")
    with pytest.raises(VerificationError, match="tenant 'ghost': no tenant row"):
        verify(ghost)


@pytest.fixture
def one_line_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A TCP service that answers every connection with one line (not necessarily SMTP)."""
    line: bytes = request.param
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _addr = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(line)
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    server.close()


@pytest.mark.parametrize(
    ("one_line_server", "shown"),
    [
        (b"554 5.3.2 no service here\r\n", "554"),
        (b"HTTP/1.1 400 internal-canary-0451\r\n", "something other than SMTP"),
    ],
    indirect=["one_line_server"],
)
def test_an_smtp_host_that_does_not_greet_with_220_is_reported_without_its_reply(
    tenants: Tenants, one_line_server: int, shown: str
) -> None:
    move(tenants.hooli, port=one_line_server)
    report = verify(tenants.hooli)
    # The greeting is read as TLS starts (for implicit TLS it comes after the handshake).
    assert failed_at(report, "tls") == (
        f"hooli: the SMTP server 127.0.0.1:{one_line_server} greeted with {shown}, not 220"
    )
    assert "canary" not in report.line()


def test_a_connection_dropped_mid_call_is_reported_by_its_type(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    fake_esp.reset_next()
    assert failed_at(verify(tenants.acme), "authenticate") == (
        f"acme: Mailgun at 127.0.0.1:{fake_esp.port} did not answer (ConnectionError)"
    )


def test_the_platform_accounts_redirect_is_not_followed_either(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    # The platform's own session follows redirects when sending; the probe never does.
    fake_esp.redirect_next(fake_esp.base_url + "elsewhere")
    assert failed_at(verify(tenants.initech), "authenticate") == (
        f"initech: Mailgun at 127.0.0.1:{fake_esp.port} answered with a redirect (302), which is "
        "not followed"
    )


def test_a_broken_platform_default_fails_at_resolve(tenants: Tenants, settings: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {"BACKEND": "tenantmail.backends.TenantBackend"},
    }
    assert failed_at(verify(tenants.initech), "resolve") == (
        'initech: TENANTMAIL["DEFAULT"]: BACKEND is TenantBackend itself; name the platform\'s '
        "real backend"
    )


def test_an_smtp_account_without_a_username_skips_authentication(
    tenants: Tenants, fake_smtp: FakeSMTP
) -> None:
    tenants.hooli.mail_options = {**tenants.hooli.mail_options, "username": "", "password": ""}
    tenants.hooli.save()
    report = verify(tenants.hooli)
    assert report.ok, report.line()
    assert report.stage("authenticate").detail == (
        "no username configured: the server is used without SMTP AUTH"
    )


def test_an_ses_endpoint_over_tls_is_checked_with_botocores_ca_bundle(
    tenants: Tenants,
    staff: User,
    settings: Any,
    subaccounts: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeESP(tls=True) as esp:
        accounts(esp).reset()
        ses = {
            **subaccounts["amazon_ses"],
            "client_params": {"endpoint_url": esp.amazon_ses_endpoint_url},
        }
        settings.TENANTMAIL = {
            **settings.TENANTMAIL,
            "SUBACCOUNTS": {**subaccounts, "amazon_ses": ses},
        }
        initech = as_subaccount(tenants.initech, "amazon_ses_tenant", "initech-tenant")
        reason = failed_at(verify(initech, send_to=STAFF), "tls")
        assert reason.startswith(
            f"initech: TLS failed at 127.0.0.1:{esp.port}: the certificate is not valid for "
            "127.0.0.1 ("
        )
        monkeypatch.setenv("AWS_CA_BUNDLE", esp.ca_bundle_path)
        report = verify(initech, send_to=STAFF, force=True)
        assert report.ok, report.line()
        assert report.stage("tls").detail == "certificate valid for 127.0.0.1"
        assert [m.on_behalf_of for m in esp.messages] == ["initech-tenant"]
