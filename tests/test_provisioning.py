"""Provisioning, happy paths: each ESP's sub-account is created over real HTTP, stored on the
tenant, found again by the next run, and the tenant's next real send uses it."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from tenantmail.masking import mask
from tenantmail.provisioning import provision
from tenantmail.testing import FakeESP
from tenantmail.testing_provisioning import accounts
from tests.conftest import Tenants
from tests.provisioning_helpers import (
    AWS_KEY_ID,
    BREVO_MASTER,
    CONFIG_SET_ARN,
    IDENTITY_ARN,
    PARENT_KEY,
    POSTMARK_ACCOUNT,
    SECRETS,
    esp,
    provisioning_settings,
    send_as,
)
from tests.tenants_app.models import Client

__all__ = ["esp", "provisioning_settings"]  # fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("provisioning_settings")]


def stored_options(tenant: Client) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT mail_options FROM {Client._meta.db_table} WHERE id = %s",  # noqa: S608
            [tenant.pk],
        )
        return str(cursor.fetchone()[0])


def test_mailgun_subaccount(tenants: Tenants, esp: FakeESP) -> None:
    result = provision(tenants.initech, "mailgun")

    [created] = accounts(esp).mailgun.values()
    assert created["name"] == "initech"
    assert accounts(esp).calls == [("mailgun.list", PARENT_KEY), ("mailgun.create", PARENT_KEY)]
    assert (result.backend, result.subaccount, result.created) == (
        "mailgun_subaccount",
        created["id"],
        (f"Mailgun subaccount 'initech' ({created['id']})",),
    )
    row = Client.objects.get(pk=tenants.initech.pk)
    assert (row.mail_backend, row.mail_subaccount, row.mail_options) == (
        "mailgun_subaccount",
        created["id"],
        {},
    )
    received = send_as(row, esp)
    assert (received.esp, received.credential, received.on_behalf_of) == (
        "mailgun",
        PARENT_KEY,
        created["id"],
    )


def test_postmark_server_token_is_stored_encrypted(tenants: Tenants, esp: FakeESP) -> None:
    result = provision(tenants.initech, "postmark")

    [server] = accounts(esp).postmark.values()
    token = server["ApiTokens"][0]
    assert server["Name"] == "initech"
    assert {c for _, c in accounts(esp).calls} == {POSTMARK_ACCOUNT}
    row = Client.objects.get(pk=tenants.initech.pk)
    assert (row.mail_backend, row.mail_subaccount) == ("postmark", str(server["ID"]))
    assert row.mail_options == {"server_token": token, "api_url": esp.postmark_api_url}
    assert token not in stored_options(row)  # encrypted at rest
    assert token not in repr(result)
    assert result.fields["mail_options"].count(mask(token)) == 1
    received = send_as(row, esp)
    assert (received.esp, received.credential) == ("postmark", token)


def test_ses_tenant_with_its_resources(tenants: Tenants, esp: FakeESP) -> None:
    result = provision(tenants.initech, "amazon_ses")

    state = accounts(esp)
    assert list(state.ses_tenants) == ["initech"]
    assert state.ses_resources["initech"] == [IDENTITY_ARN, CONFIG_SET_ARN]
    assert state.steps() == [
        "amazon_ses.get",
        "amazon_ses.create",
        "amazon_ses.associate",
        "amazon_ses.associate",
    ]
    assert {c for _, c in state.calls} == {AWS_KEY_ID}  # signed with the platform's keys
    assert result.subaccount == "initech"
    row = Client.objects.get(pk=tenants.initech.pk)
    assert (row.mail_backend, row.mail_subaccount, row.mail_options) == (
        "amazon_ses_tenant",
        "initech",
        {},
    )
    received = send_as(row, esp)
    assert (received.esp, received.credential, received.on_behalf_of) == (
        "amazon_ses",
        AWS_KEY_ID,
        "initech",
    )


def test_brevo_subaccount_key(tenants: Tenants, esp: FakeESP) -> None:
    result = provision(tenants.initech, "brevo")

    state = accounts(esp)
    [sub] = state.brevo.values()
    [key] = state.brevo_keys[sub["id"]]
    assert sub["companyName"] == "initech"
    assert state.steps() == ["brevo.list", "brevo.create", "brevo.key"]
    assert {c for _, c in state.calls} == {BREVO_MASTER}
    assert len(result.created) == 2
    row = Client.objects.get(pk=tenants.initech.pk)
    assert (row.mail_backend, row.mail_subaccount) == ("brevo", str(sub["id"]))
    assert row.mail_options["api_key"] == key
    assert key not in stored_options(row)
    received = send_as(row, esp)
    assert (received.esp, received.credential) == ("brevo", key)


@pytest.mark.parametrize("esp_name", ["mailgun", "postmark", "amazon_ses", "brevo"])
def test_second_run_is_a_no_op(tenants: Tenants, esp: FakeESP, esp_name: str) -> None:
    first = provision(tenants.initech, esp_name)
    calls = list(accounts(esp).calls)

    again = provision(Client.objects.get(pk=tenants.initech.pk), esp_name)

    assert accounts(esp).calls == calls  # not even a read
    assert again.already_provisioned
    assert again.subaccount == first.subaccount
    assert "already provisioned" in again.summary()


@pytest.mark.parametrize(
    ("esp_name", "steps"),
    [
        ("mailgun", ["mailgun.list"]),
        ("postmark", ["postmark.list", "postmark.get"]),
        ("amazon_ses", ["amazon_ses.get", "amazon_ses.list_resources"]),
        ("brevo", ["brevo.list", "brevo.key"]),
    ],
)
def test_a_run_finds_the_existing_subaccount(
    tenants: Tenants, esp: FakeESP, esp_name: str, steps: list[str]
) -> None:
    """The sub-account exists at the ESP but not on the row (an earlier run failed after
    creating it, or the operator cleared the row): the next run reuses it."""
    first = provision(tenants.initech, esp_name)
    Client.objects.filter(pk=tenants.initech.pk).update(
        mail_backend="", mail_subaccount="", mail_options={}
    )
    state = accounts(esp)
    state.calls.clear()

    again = provision(Client.objects.get(pk=tenants.initech.pk), esp_name)

    assert state.steps() == steps
    assert again.subaccount == first.subaccount
    # Brevo shows a key once: a run that finds the sub-account issues it a new key.
    assert len(again.created) == (1 if esp_name == "brevo" else 0)
    assert again.found
    sizes = (len(state.mailgun), len(state.postmark), len(state.ses_tenants), len(state.brevo))
    assert sum(sizes) == 1  # nothing created twice
    row = Client.objects.get(pk=tenants.initech.pk)
    assert row.mail_subaccount == first.subaccount
    assert send_as(row, esp).esp == ("amazon_ses" if esp_name == "amazon_ses" else esp_name)


@pytest.mark.parametrize(
    ("esp_name", "reads"),
    [
        ("mailgun", ["mailgun.list"]),
        ("postmark", ["postmark.list"]),
        ("amazon_ses", ["amazon_ses.get"]),
        ("brevo", ["brevo.list"]),
    ],
)
def test_dry_run_reads_and_writes_nothing(
    tenants: Tenants, esp: FakeESP, esp_name: str, reads: list[str]
) -> None:
    result = provision(tenants.initech, esp_name, dry_run=True)

    state = accounts(esp)
    assert state.steps() == reads
    assert not (state.mailgun)
    assert not (state.postmark)
    assert not (state.ses_tenants)
    assert not (state.brevo)
    assert result.dry_run
    assert not result.created
    assert any(step.startswith("would ") for step in result.steps)
    assert result.fields["mail_backend"] == result.backend
    assert "would be provisioned" in result.summary()
    row = Client.objects.get(pk=tenants.initech.pk)
    assert (row.mail_backend, row.mail_subaccount, row.mail_options) == ("", "", {})


def test_dry_run_of_an_existing_subaccount(tenants: Tenants, esp: FakeESP) -> None:
    provision(tenants.initech, "postmark")
    Client.objects.filter(pk=tenants.initech.pk).update(mail_backend="", mail_subaccount="")
    accounts(esp).calls.clear()

    result = provision(
        Client.objects.get(pk=tenants.initech.pk), "postmark", dry_run=True, replace=True
    )

    assert accounts(esp).steps() == ["postmark.list"]  # the token is not even read
    assert result.found
    assert result.subaccount


def test_ses_run_associates_only_what_is_missing(
    tenants: Tenants, esp: FakeESP, settings: Any
) -> None:
    provision(tenants.initech, "amazon_ses")
    extra = "arn:aws:ses:eu-west-1:123456789012:identity/other.example"
    settings.TENANTMAIL["PROVISIONING"]["amazon_ses"]["resource_arns"].append(extra)
    settings.TENANTMAIL = dict(settings.TENANTMAIL)  # a settings change re-reads it
    Client.objects.filter(pk=tenants.initech.pk).update(mail_backend="", mail_subaccount="")
    accounts(esp).calls.clear()

    provision(Client.objects.get(pk=tenants.initech.pk), "amazon_ses")

    state = accounts(esp)
    assert state.steps() == ["amazon_ses.get", "amazon_ses.list_resources", "amazon_ses.associate"]
    assert state.ses_resources["initech"] == [IDENTITY_ARN, CONFIG_SET_ARN, extra]


def test_replace_moves_a_tenant_with_its_own_key(tenants: Tenants, esp: FakeESP) -> None:
    provision(tenants.acme, "postmark", replace=True)

    row = Client.objects.get(pk=tenants.acme.pk)
    assert row.mail_backend == "postmark"
    assert set(row.mail_options) == {"server_token", "api_url"}  # acme's Mailgun key is gone
    assert send_as(row, esp).credential == row.mail_options["server_token"]


def test_name_prefix(tenants: Tenants, esp: FakeESP, settings: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "PROVISIONING": {
            **settings.TENANTMAIL["PROVISIONING"],
            "mailgun": {"name_prefix": "saas-"},
        },
    }
    provision(tenants.initech, "mailgun")
    [created] = accounts(esp).mailgun.values()
    assert created["name"] == "saas-initech"


def test_command(tenants: Tenants, esp: FakeESP) -> None:
    out = StringIO()
    call_command("tenantmail_provision", "initech", "--esp", "postmark", stdout=out)
    [server] = accounts(esp).postmark.values()
    text = out.getvalue()
    assert f"initech: provisioned at postmark ({server['ID']}), postmark" in text
    assert "POST servers Name=initech: created server" in text
    assert mask(server["ApiTokens"][0]) in text
    assert not any(secret in text for secret in (*SECRETS, server["ApiTokens"][0]))

    out = StringIO()
    call_command("tenantmail_provision", "initech", "--esp", "postmark", stdout=out)
    assert "already provisioned" in out.getvalue()


def test_command_dry_run(tenants: Tenants, esp: FakeESP) -> None:
    out = StringIO()
    call_command("tenantmail_provision", "initech", "--esp", "brevo", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "would POST corporate/subAccount companyName=initech" in text
    assert "would set mail_options = {'api_key': (issued by brevo, stored encrypted)}" in text
    assert "initech: would be provisioned at brevo" in text
    assert accounts(esp).steps() == ["brevo.list"]
