"""``manage.py tenantmail_verify``: one line per tenant, non-zero exit when any fails (CI/cron),
``--send-to`` only to staff, the throttle and ``--force``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from tenantmail.masking import mask
from tenantmail.testing import FakeESP, FakeSMTP
from tenantmail.testing_accounts import AccountState
from tests.conftest import ACME_KEY, Tenants
from tests.test_verification import STAFF, account, staff

pytestmark = pytest.mark.django_db
__all__ = ["account", "staff"]  # the fixtures, re-used


def run(*args: str) -> tuple[list[str], str | None]:
    out = StringIO()
    try:
        call_command("tenantmail_verify", *args, stdout=out)
    except CommandError as error:
        return out.getvalue().splitlines(), str(error)
    return out.getvalue().splitlines(), None


def test_all_tenants_pass_and_the_test_messages_go_to_the_staff_member(
    tenants: Tenants, fake_esp: FakeESP, fake_smtp: FakeSMTP, account: AccountState, staff: User
) -> None:
    lines, error = run("--all", "--send-to", STAFF)
    assert error is None, lines
    assert [line.split(":", 1)[0] for line in lines[:-1]] == ["acme", "globex", "hooli", "initech"]
    assert all(": ok [" in line for line in lines[:-1])
    assert lines[-1] == "verified 4 tenant(s): all ok."
    received = fake_esp.messages + fake_smtp.messages
    assert len(received) == 4
    assert {tuple(m.to) for m in received} == {(STAFF,)}


def test_all_exits_non_zero_when_any_tenant_fails(tenants: Tenants, account: AccountState) -> None:
    account.refused_keys.add(ACME_KEY)
    lines, error = run("--all")
    assert error == "verified 4 tenant(s): 1 failed or not verified."
    assert lines[0].startswith(
        f"acme: authentication failed at Mailgun (401) with key{mask(ACME_KEY)} [failed at "
        "authenticate; resolve ok"
    )
    assert all(": ok [" in line for line in lines[1:])
    assert all(ACME_KEY not in line for line in lines)


def test_named_tenants_only_and_unknown_names_fail(tenants: Tenants, account: AccountState) -> None:
    lines, error = run("globex", "nosuch")
    assert lines[0] == "nosuch: no tenant row has this schema name"
    assert lines[1].startswith("globex: ok [")
    assert error == "verified 1 tenant(s): 1 failed or not verified."


def test_a_throttled_tenant_is_not_verified_unless_forced(
    tenants: Tenants, account: AccountState
) -> None:
    assert run("acme")[1] is None
    lines, error = run("acme")
    assert lines[0].startswith("acme: not verified: tenant 'acme': verified 0 s ago; ")
    assert "tenantmail_verify --force" in lines[0]
    assert error == "verified 1 tenant(s): 1 failed or not verified."
    lines, error = run("acme", "--force")
    assert error is None
    assert lines[0].startswith("acme: ok [")


@pytest.mark.parametrize("address", ["customer@example.com", "op@saas.example"])
def test_send_to_must_be_an_active_staff_users_address(
    tenants: Tenants, fake_esp: FakeESP, account: AccountState, address: str
) -> None:
    # op@saas.example exists here, but is not staff.
    User.objects.create_user("op", email="op@saas.example", password="x" * 12)
    lines, error = run("--all", "--send-to", address)
    assert error is not None
    assert "is not the email of an active staff user" in error
    assert lines == []
    assert fake_esp.messages == []
    assert fake_esp.rejected == []


def test_schemas_or_all_is_required(tenants: Tenants) -> None:
    assert run()[1] == "Name the tenants to verify (schema names), or pass --all."
    assert run("acme", "--all")[1] == "Name the tenants to verify (schema names), or pass --all."
