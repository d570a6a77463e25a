"""Verification of a tenant's mail settings (issue 11): each stage failing in turn, the happy paths
for HTTP ESPs and sub-accounts, the masked reason, the stored result and the throttle.

Real PostgreSQL tenants, real HTTP to the loopback fake ESP (whose read-only account endpoints
are in ``tenantmail.testing_accounts``), the real send path for the test message.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from tenantmail.masking import mask
from tenantmail.testing import FakeESP
from tenantmail.testing_accounts import AccountState, accounts
from tenantmail.verification import (
    STAGES,
    RecipientNotAllowed,
    VerificationReport,
    VerificationThrottled,
    verify,
)
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants
from tests.tenants_app.models import Client
from tests.test_subaccounts import (
    AWS_KEY_ID,
    PARENT_KEY,
    SPARKPOST_PARENT,
    as_subaccount,
    subaccounts,
)

pytestmark = pytest.mark.django_db
__all__ = ["subaccounts"]  # the fixture, re-used

STAFF = "op@saas.example"


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("op", email=STAFF, password="op-pass-1234", is_staff=True)


@pytest.fixture
def account(fake_esp: FakeESP) -> Iterator[AccountState]:
    state = accounts(fake_esp)
    state.reset()
    yield state
    state.reset()


def statuses(report: VerificationReport) -> dict[str, str]:
    return {s.name: s.status for s in report.stages}


def failed_at(report: VerificationReport, stage: str) -> str:
    """The reason, after checking ``stage`` failed and everything after it did not run."""
    assert report.failed_stage is not None, report.line()
    assert report.failed_stage.name == stage, report.line()
    after = STAGES[STAGES.index(stage) + 1 :]
    assert all(statuses(report)[name] == "not_run" for name in after), report.line()
    assert all(statuses(report)[name] != "failed" for name in STAGES[: STAGES.index(stage)])
    return report.reason


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def move(tenant: Client, **options: Any) -> Client:
    tenant.mail_options = {**tenant.mail_options, **options}
    tenant.confirm_mail_endpoint_change()
    tenant.save()
    return tenant


# -- the happy paths ------------------------------------------------------------------------------


def test_a_mailgun_tenant_passes_every_stage_and_the_test_mail_goes_to_the_staff_member_only(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    report = verify(tenants.acme, send_to=STAFF)

    assert report.ok, report.line()
    assert statuses(report) == {
        "resolve": "ok",
        "connect": "ok",
        "tls": "skipped",  # the fake is plain http: said so, not passed off as ok
        "authenticate": "ok",
        "sender": "ok",
        "test_message": "ok",
    }
    assert report.stage("resolve").detail == "mailgun, own account"
    assert report.stage("sender").detail == "mg.acme.example is active"
    [sent] = fake_esp.messages
    assert (sent.to, sent.credential, sent.from_email) == ([STAFF], ACME_KEY, "hello@acme.example")
    assert sent.metadata.get("tenant") == "acme"
    assert report.line().startswith("acme: ok [resolve ok (mailgun, own account); connect ok")


def test_without_a_staff_address_the_test_message_is_skipped_and_nothing_is_sent(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    report = verify(tenants.acme)
    assert report.ok
    assert report.stage("test_message").status == "skipped"
    assert "--send-to" in report.stage("test_message").detail
    assert fake_esp.messages == []


def test_a_postmark_tenant_authenticates_with_its_server_token(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    report = verify(tenants.globex, send_to=STAFF)
    assert report.ok, report.line()
    assert report.stage("authenticate").detail == f"server token{mask(GLOBEX_TOKEN)} accepted"
    # A server token cannot read sender signatures: said so; the test message checks the sender.
    assert report.stage("sender").status == "skipped"
    [sent] = fake_esp.messages
    assert (sent.esp, sent.credential, sent.to) == ("postmark", GLOBEX_TOKEN, [STAFF])


def test_a_tenant_on_the_platform_account_says_so(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    report = verify(tenants.initech, send_to=STAFF)
    assert report.ok, report.line()
    assert report.stage("resolve").detail == "mailgun, the platform account"
    assert report.stage("authenticate").detail == f"key{mask(PLATFORM_KEY)} accepted"
    assert [m.credential for m in fake_esp.messages] == [PLATFORM_KEY]


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
def test_a_sendgrid_key_without_the_mail_send_scope_fails_at_sender(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    key = "SG.initech-4444444444444444"
    tenants.initech.mail_backend = "sendgrid"
    tenants.initech.mail_options = {"api_key": key, "api_url": fake_esp.sendgrid_api_url}
    tenants.initech.save()
    assert verify(tenants.initech, force=True).ok
    account.sendgrid_scopes = ["stats.read"]
    reason = failed_at(verify(tenants.initech, force=True), "sender")
    assert reason == (
        "initech: the SendGrid API key lacks the mail.send scope; create a key with Mail Send "
        "access"
    )


# -- sub-accounts ----------------------------------------------------------------------------------


def test_a_mailgun_subaccount_tenant_is_verified_on_behalf_of_its_subaccount(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User, subaccounts: object
) -> None:
    initech = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    report = verify(initech, send_to=STAFF)
    assert report.ok, report.line()
    assert report.stage("resolve").detail == "mailgun_subaccount, sub-account sa-initech"
    assert report.stage("authenticate").detail == (
        f"key{mask(PARENT_KEY)} on behalf of sa-initech accepted"
    )
    [sent] = fake_esp.messages
    assert (sent.credential, sent.on_behalf_of, sent.to) == (PARENT_KEY, "sa-initech", [STAFF])
    assert PARENT_KEY not in report.line()


def test_a_refused_parent_key_names_the_subaccount_and_masks_the_key(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, subaccounts: object
) -> None:
    initech = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    account.refused_keys.add(PARENT_KEY)
    reason = failed_at(verify(initech), "authenticate")
    assert reason == (
        f"initech: authentication failed at Mailgun (401) with key{mask(PARENT_KEY)} "
        "on behalf of sa-initech"
    )


def test_a_sparkpost_subaccount_tenant_checks_its_sending_domain(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User, subaccounts: object
) -> None:
    initech = as_subaccount(
        tenants.initech,
        "sparkpost_subaccount",
        "314",
        mail_defaults={"from_email": "news@initech.example"},
    )
    report = verify(initech, send_to=STAFF)
    assert report.ok, report.line()
    assert report.stage("sender").detail == "initech.example is verified"
    [sent] = fake_esp.messages
    assert (sent.credential, sent.on_behalf_of) == (SPARKPOST_PARENT, "314")

    account.domains["initech.example"] = "unverified"
    reason = failed_at(verify(initech, force=True), "sender")
    assert reason == "initech: SparkPost sending domain initech.example is not verified"
    account.domains["initech.example"] = None
    reason = failed_at(verify(initech, force=True), "sender")
    assert reason == "initech: SparkPost has no sending domain initech.example in this account"


def test_an_ses_tenant_is_verified_with_getaccount_and_getemailidentity(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User, subaccounts: object
) -> None:
    initech = as_subaccount(
        tenants.initech,
        "amazon_ses_tenant",
        "initech-tenant",
        mail_defaults={"from_email": "billing@initech.example"},
    )
    report = verify(initech, send_to=STAFF)
    assert report.ok, report.line()
    assert report.stage("authenticate").detail == f"access key{mask(AWS_KEY_ID)} accepted"
    assert report.stage("sender").detail == "initech.example is verified for sending"
    [sent] = fake_esp.messages
    assert (sent.esp, sent.on_behalf_of, sent.to) == ("amazon_ses", "initech-tenant", [STAFF])

    account.domains["initech.example"] = "unverified"
    reason = failed_at(verify(initech, force=True), "sender")
    assert reason == (
        "initech: Amazon SES identity initech.example is not verified for sending (status PENDING)"
    )
    account.domains["initech.example"] = None
    reason = failed_at(verify(initech, force=True), "sender")
    assert reason == "initech: Amazon SES has no identity for billing@initech.example or its domain"
    account.domains.clear()
    account.refused_keys.add(AWS_KEY_ID)
    reason = failed_at(verify(initech, force=True), "authenticate")
    assert (
        reason
        == f"initech: authentication failed at Amazon SES (403) with access key{mask(AWS_KEY_ID)}"
    )


# -- each stage failing in turn --------------------------------------------------------------------


def test_bad_config_fails_at_resolve_naming_tenant_and_setting(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    tenants.initech.mail_backend = "mailgun"  # without its api_key
    tenants.initech.save()
    report = verify(tenants.initech, send_to=STAFF)
    reason = failed_at(report, "resolve")
    assert reason.startswith("initech: tenant 'initech', mail_options: ")
    assert "needs 'api_key'" in reason
    assert fake_esp.messages == []
    assert fake_esp.rejected == []


def test_a_closed_port_fails_at_connect(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    port = closed_port()
    acme = move(tenants.acme, api_url=f"http://127.0.0.1:{port}/mailgun/v3/")
    reason = failed_at(verify(acme, send_to=STAFF), "connect")
    assert reason == f"acme: cannot connect to 127.0.0.1:{port}: connection refused"


def test_a_private_endpoint_fails_at_connect_when_blocked(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "BLOCK_PRIVATE_ENDPOINTS": True}
    reason = failed_at(verify(tenants.acme), "connect")
    assert 'TENANTMAIL["BLOCK_PRIVATE_ENDPOINTS"] refuses' in reason
    assert fake_esp.rejected == []
    assert fake_esp.messages == []


def test_an_untrusted_certificate_fails_at_tls(
    tenants: Tenants, account: AccountState, staff: User
) -> None:
    with FakeESP(tls=True) as esp:
        acme = move(tenants.acme, api_url=esp.mailgun_api_url)
        reason = failed_at(verify(acme, send_to=STAFF), "tls")
        assert reason.startswith(
            f"acme: TLS failed at 127.0.0.1:{esp.port}: the certificate is not valid for 127.0.0.1"
        )
        assert esp.messages == []


def test_a_trusted_certificate_passes_tls_and_the_send_trusts_the_same_bundle(
    tenants: Tenants, account: AccountState, staff: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeESP(tls=True) as esp:
        accounts(esp).reset()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", esp.ca_bundle_path)
        acme = move(tenants.acme, api_url=esp.mailgun_api_url)
        report = verify(acme, send_to=STAFF)
        assert report.ok, report.line()
        assert report.stage("tls").detail == "certificate valid for 127.0.0.1"
        assert [m.to for m in esp.messages] == [[STAFF]]


def test_a_wrong_key_fails_at_authenticate_with_the_key_masked(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    account.refused_keys.add(ACME_KEY)
    report = verify(tenants.acme, send_to=STAFF)
    assert failed_at(report, "authenticate") == (
        f"acme: authentication failed at Mailgun (401) with key{mask(ACME_KEY)}"
    )
    assert mask(ACME_KEY) == f"…{ACME_KEY[-4:]}"
    stored = Client.objects.get(pk=tenants.acme.pk).mail_verification
    assert ACME_KEY not in report.line()
    assert ACME_KEY not in json.dumps(stored)
    assert fake_esp.messages == []


def test_a_wrong_postmark_token_names_the_server_token(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    account.refused_keys.add(GLOBEX_TOKEN)
    assert failed_at(verify(tenants.globex), "authenticate") == (
        f"globex: authentication failed at Postmark (401) with server token{mask(GLOBEX_TOKEN)}"
    )


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (
            "unverified",
            "acme: Mailgun sending domain mg.acme.example is unverified, not active; finish its "
            "DNS verification in Mailgun",
        ),
        (
            None,
            "acme: Mailgun has no sending domain mg.acme.example in this account; add it in "
            "Mailgun or set sender_domain",
        ),
    ],
)
def test_an_unverified_or_unknown_domain_fails_at_sender(
    tenants: Tenants,
    fake_esp: FakeESP,
    account: AccountState,
    staff: User,
    state: str | None,
    reason: str,
) -> None:
    account.domains["mg.acme.example"] = state
    assert failed_at(verify(tenants.acme, send_to=STAFF), "sender") == reason
    assert fake_esp.messages == []


def test_an_esp_error_on_the_send_fails_at_test_message(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, staff: User
) -> None:
    account.fail_sends = 1
    report = verify(tenants.acme, send_to=STAFF)
    assert failed_at(report, "test_message") == (
        "acme: the test message was refused: Mailgun answered 500"
    )
    assert fake_esp.messages == []


def test_a_tenant_endpoint_that_redirects_fails_without_following(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    with FakeESP() as internal:
        fake_esp.redirect_next(internal.base_url + "secret")
        reason = failed_at(verify(tenants.acme), "authenticate")
        assert reason == (
            f"acme: Mailgun at 127.0.0.1:{fake_esp.port} answered with a redirect, which is not "
            "followed"
        )
        assert internal.rejected == []  # never asked


# -- the recipient, the stored result and the throttle ---------------------------------------------


@pytest.mark.parametrize("address", ["someone@example.com", "customer@acme.example", ""])
def test_the_test_message_goes_only_to_an_active_staff_users_address(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, address: str
) -> None:
    User.objects.create_user("plain", email="customer@acme.example", password="x" * 12)
    User.objects.create_user(
        "gone", email="someone@example.com", password="x" * 12, is_staff=True, is_active=False
    )
    with pytest.raises(RecipientNotAllowed, match="only to a staff member's own address"):
        verify(tenants.acme, send_to=address)
    assert fake_esp.messages == []
    assert fake_esp.rejected == []
    assert Client.objects.get(pk=tenants.acme.pk).mail_verified_at is None  # not even claimed


def test_the_result_and_time_are_stored_on_the_tenant(
    tenants: Tenants, account: AccountState, staff: User
) -> None:
    account.refused_keys.add(ACME_KEY)
    report = verify(tenants.acme, send_to=STAFF)
    row = Client.objects.get(pk=tenants.acme.pk)
    assert row.mail_verified_at == report.checked_at
    assert row.mail_verification == {
        "ok": False,
        "stage": "authenticate",
        "reason": f"acme: authentication failed at Mailgun (401) with key{mask(ACME_KEY)}",
        "checked_at": report.checked_at.isoformat(),
        "stages": {
            "resolve": "ok",
            "connect": "ok",
            "tls": "skipped",
            "authenticate": "failed",
            "sender": "not_run",
            "test_message": "not_run",
        },
    }
    account.refused_keys.clear()
    verify(row, force=True)
    assert Client.objects.get(pk=row.pk).mail_verification["ok"] is True


def test_a_second_verification_within_the_interval_is_refused_across_instances(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, settings: Any
) -> None:
    verify(tenants.acme)
    fake_esp.clear()
    # A fresh instance (another request or process) sees the stored time: the throttle is the DB's.
    again = Client.objects.get(pk=tenants.acme.pk)
    with pytest.raises(VerificationThrottled) as raised:
        verify(again)
    assert str(raised.value).startswith("tenant 'acme': verified 0 s ago; ")
    assert 'TENANTMAIL["VERIFY_INTERVAL"] allows one verification every 60 s' in str(raised.value)
    assert fake_esp.rejected == []
    assert fake_esp.messages == []
    # Other tenants are not throttled by it; --force (operators) bypasses it.
    assert verify(tenants.globex).ok
    assert verify(again, force=True).ok
    settings.TENANTMAIL = {**settings.TENANTMAIL, "VERIFY_INTERVAL": 0}
    assert verify(again).ok


def test_a_verification_older_than_the_interval_allows_the_next(
    tenants: Tenants, account: AccountState
) -> None:
    import datetime

    verify(tenants.acme)
    Client.objects.filter(pk=tenants.acme.pk).update(
        mail_verified_at=tenants.acme.mail_verified_at - datetime.timedelta(seconds=61)
    )
    assert verify(Client.objects.get(pk=tenants.acme.pk)).ok


def test_verify_interval_is_validated(settings: Any) -> None:
    from tenantmail.conf import load_settings
    from tenantmail.exceptions import TenantMailConfigurationError

    settings.TENANTMAIL = {**settings.TENANTMAIL, "VERIFY_INTERVAL": -1}
    with pytest.raises(TenantMailConfigurationError, match=r'TENANTMAIL\["VERIFY_INTERVAL"\]'):
        load_settings()
