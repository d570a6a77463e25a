"""Provisioning failures: an ESP error at any step leaves the tenant row untouched, names the
tenant, the ESP and the step, shows no secret, and says what was already created remotely so the
next run resumes; bad settings are configuration errors listing every problem."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.masking import mask
from tenantmail.provisioning import ProvisioningError, provision
from tenantmail.provisioning.conf import parse_provisioning
from tenantmail.testing import FakeESP
from tenantmail.testing_provisioning import accounts
from tests.conftest import Tenants
from tests.provisioning_helpers import (
    BREVO_MASTER,
    POSTMARK_ACCOUNT,
    SECRETS,
    esp,
    provisioning,
    provisioning_settings,
    subaccounts,
)
from tests.tenants_app.models import Client

__all__ = ["esp", "provisioning_settings"]  # fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("provisioning_settings")]


def untouched(tenant: Client) -> None:
    row = Client.objects.get(pk=tenant.pk)
    assert (row.mail_backend, row.mail_subaccount, row.mail_options) == ("", "", {})


def issued_secrets(esp: FakeESP) -> list[str]:
    state = accounts(esp)
    tokens = [s["ApiTokens"][0] for s in state.postmark.values()]
    return tokens + [k for keys in state.brevo_keys.values() for k in keys]


# (esp, failing step, step named in the error, created before the failure, set up first)
CASES = [
    ("mailgun", "mailgun.list", "find subaccount", 0, None),
    ("mailgun", "mailgun.create", "create subaccount", 0, None),
    ("postmark", "postmark.list", "find server", 0, None),
    ("postmark", "postmark.create", "create server", 0, None),
    ("postmark", "postmark.get", "read server token", 0, "exists"),
    ("amazon_ses", "amazon_ses.get", "find SES tenant", 0, None),
    ("amazon_ses", "amazon_ses.create", "create SES tenant", 0, None),
    ("amazon_ses", "amazon_ses.associate", "associate arn:aws:ses", 1, None),
    ("amazon_ses", "amazon_ses.list_resources", "list tenant resources", 0, "exists"),
    ("brevo", "brevo.list", "find sub-account", 0, None),
    ("brevo", "brevo.create", "create sub-account", 0, None),
    ("brevo", "brevo.key", "create API key", 1, None),
]


@pytest.mark.parametrize(("esp_name", "step", "named", "created", "setup"), CASES)
@pytest.mark.parametrize("status", [500, 400])
def test_an_esp_error_at_each_step(
    tenants: Tenants,
    esp: FakeESP,
    esp_name: str,
    step: str,
    named: str,
    created: int,
    setup: str | None,
    status: int,
) -> None:
    tenant = tenants.initech
    if setup == "exists":  # the sub-account is at the ESP already, not yet on the row
        provision(tenant, esp_name)
        Client.objects.filter(pk=tenant.pk).update(
            mail_backend="", mail_subaccount="", mail_options={}
        )
        tenant = Client.objects.get(pk=tenant.pk)
    accounts(esp).fail_at(step, status)

    with pytest.raises(ProvisioningError) as info:
        provision(tenant, esp_name)

    error = info.value
    text = str(error)
    assert text.startswith(f"tenant 'initech': provisioning at {esp_name} failed at step ")
    assert named in error.step
    assert error.tenant == "initech"
    assert error.esp == esp_name
    assert error.status == status
    assert f"answered {status}" in text
    assert "withheld" in text
    assert len(error.created) == created
    if created:
        assert "already created" in text
        assert "the next run finds it" in text
    else:
        assert "nothing was created" in text
    assert not any(secret in text for secret in (*SECRETS, *issued_secrets(esp)))
    untouched(tenant)

    # The next run resumes: nothing created twice, and the tenant is provisioned.
    result = provision(Client.objects.get(pk=tenant.pk), esp_name)
    state = accounts(esp)
    assert len(state.mailgun) + len(state.postmark) + len(state.ses_tenants) + len(state.brevo) == 1
    assert Client.objects.get(pk=tenant.pk).mail_subaccount == result.subaccount


@pytest.mark.parametrize(
    ("esp_name", "setting"),
    [
        ("mailgun", 'TENANTMAIL["SUBACCOUNTS"]["mailgun"]["api_key"]'),
        ("postmark", 'TENANTMAIL["PROVISIONING"]["postmark"]["account_token"]'),
        ("amazon_ses", 'TENANTMAIL["PROVISIONING"]["amazon_ses"]["session_params"]'),
        ("brevo", 'TENANTMAIL["PROVISIONING"]["brevo"]["api_key"]'),
    ],
)
def test_a_refused_account_credential_is_named_masked(
    tenants: Tenants, settings: Any, esp_name: str, setting: str
) -> None:
    with FakeESP(valid_credentials={"something-else-0000000000"}) as strict:
        settings.TENANTMAIL = {
            **settings.TENANTMAIL,
            "SUBACCOUNTS": subaccounts(strict),
            "PROVISIONING": provisioning(strict),
        }
        with pytest.raises(ProvisioningError) as info:
            provision(tenants.initech, esp_name)
    text = str(info.value)
    assert "refused the account credential" in text
    assert setting in text
    assert info.value.status in (401, 403)
    assert "…" in text
    assert not any(secret in text for secret in SECRETS)
    untouched(tenants.initech)


def test_a_timeout(tenants: Tenants, esp: FakeESP, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "TIMEOUT": 0.2}
    esp.delay = 1.0
    with pytest.raises(ProvisioningError, match=r"find server.*no answer within 0\.2s"):
        provision(tenants.initech, "postmark")
    untouched(tenants.initech)


def test_an_ses_timeout(tenants: Tenants, esp: FakeESP, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "TIMEOUT": 0.2}
    esp.delay = 1.0
    with pytest.raises(ProvisioningError, match=r"find SES tenant.*ReadTimeoutError"):
        provision(tenants.initech, "amazon_ses")
    untouched(tenants.initech)


def test_redirects_are_not_followed(tenants: Tenants, esp: FakeESP) -> None:
    esp.redirect_next("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(ProvisioningError, match=r"answered a redirect, not followed"):
        provision(tenants.initech, "mailgun")
    untouched(tenants.initech)


def test_an_unreachable_esp(tenants: Tenants, settings: Any) -> None:
    with FakeESP() as gone:
        url = gone.postmark_api_url
    settings.TENANTMAIL["PROVISIONING"]["postmark"]["api_url"] = url
    settings.TENANTMAIL = dict(settings.TENANTMAIL)
    with pytest.raises(ProvisioningError, match=r"could not reach .* \(ConnectionError\)"):
        provision(tenants.initech, "postmark")


def test_an_undocumented_answer(tenants: Tenants, esp: FakeESP) -> None:
    esp.fail_next(200, '{"unexpected": true}')
    with pytest.raises(ProvisioningError, match=r"no 'Servers' list \(not the documented shape"):
        provision(tenants.initech, "postmark")
    esp.fail_next(200, "<html>")
    with pytest.raises(ProvisioningError, match=r"answer \(200\) is not JSON"):
        provision(tenants.initech, "postmark")


def test_a_row_changed_meanwhile_is_not_overwritten(tenants: Tenants, esp: FakeESP) -> None:
    stale = Client.objects.get(pk=tenants.initech.pk)
    Client.objects.filter(pk=stale.pk).update(mail_backend="smtp")  # someone else, meanwhile

    with pytest.raises(ProvisioningError) as info:
        provision(stale, "postmark")

    assert info.value.step == "write the tenant"
    assert "already created at postmark by this run: Postmark server 'initech'" in str(info.value)
    assert Client.objects.get(pk=stale.pk).mail_backend == "smtp"


def test_a_disabled_mailgun_subaccount_is_reported(tenants: Tenants, esp: FakeESP) -> None:
    provision(tenants.initech, "mailgun")
    [item] = accounts(esp).mailgun.values()
    item["status"] = "disabled"
    Client.objects.filter(pk=tenants.initech.pk).update(mail_backend="", mail_subaccount="")
    with pytest.raises(ProvisioningError, match=r"exists but is 'disabled'; enable it"):
        provision(Client.objects.get(pk=tenants.initech.pk), "mailgun")


# -- refused before any ESP call ---------------------------------------------------------------


def test_a_tenant_with_mail_settings_needs_replace(tenants: Tenants, esp: FakeESP) -> None:
    with pytest.raises(TenantMailConfigurationError, match=r"'acme'.*pass replace=True") as info:
        provision(tenants.acme, "postmark")
    assert info.value.setting == "mail_backend"
    assert accounts(esp).calls == []


def test_the_public_tenant_is_refused(tenants: Tenants, esp: FakeESP) -> None:
    public = Client.objects.get(schema_name="public")
    with pytest.raises(TenantMailConfigurationError, match="the platform itself"):
        provision(public, "postmark")
    assert accounts(esp).calls == []


def test_settings_that_would_not_send_are_refused_first(tenants: Tenants, esp: FakeESP) -> None:
    """Sub-account mode refuses esp_extra defaults: caught before a sub-account is created."""
    tenant = tenants.initech
    tenant.mail_defaults = {"esp_extra": {"o:tag": "x"}}
    tenant.save()
    with pytest.raises(TenantMailConfigurationError, match=r"would not send.*esp_extra"):
        provision(tenant, "mailgun")
    assert accounts(esp).calls == []


def test_a_backend_outside_the_allow_list_is_refused_first(
    tenants: Tenants, esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["mailgun", "smtp"]}
    with pytest.raises(TenantMailConfigurationError, match="would not send"):
        provision(tenants.initech, "postmark")
    assert accounts(esp).calls == []


def test_an_invalid_ses_tenant_name(tenants: Tenants, esp: FakeESP, settings: Any) -> None:
    settings.TENANTMAIL["PROVISIONING"]["amazon_ses"]["name_prefix"] = "saas."
    settings.TENANTMAIL = dict(settings.TENANTMAIL)
    with pytest.raises(TenantMailConfigurationError, match="not a valid SES tenant name"):
        provision(tenants.initech, "amazon_ses")
    assert accounts(esp).calls == []


def test_an_unknown_esp(tenants: Tenants) -> None:
    with pytest.raises(TenantMailConfigurationError, match="cannot provision 'sendgrid'"):
        provision(tenants.initech, "sendgrid")


def test_an_esp_without_an_entry(tenants: Tenants, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "PROVISIONING": {}}
    with pytest.raises(TenantMailConfigurationError, match=r"has no 'brevo' entry") as info:
        provision(tenants.initech, "brevo")
    assert info.value.setting == 'TENANTMAIL["PROVISIONING"]'


@pytest.mark.parametrize(
    ("raw", "subaccounts_raw", "fragments"),
    [
        ("x", {}, ["must be a dict"]),
        ({"sendgrid": {}}, {}, ["unknown ESP 'sendgrid'"]),
        ({"postmark": []}, {}, ['["postmark"] must be a dict']),
        (
            {"postmark": {"token": "x"}},
            {},
            ["unknown keys ['token']", '["account_token"] is missing'],
        ),
        ({"postmark": {"account_token": 5}}, {}, ['["account_token"] must be a string']),
        (
            {"postmark": {"account_token": "t", "api_url": "ftp://x"}},
            {},
            ["must be an http(s):// URL"],
        ),
        (
            {"postmark": {"account_token": "t", "tenant_options": []}},
            {},
            ["must be a dict of non-secret"],
        ),
        ({"mailgun": {}}, {}, ['send in sub-account mode with the primary key in TENANTMAIL["SUB']),
        (
            {"mailgun": {}},
            {"mailgun": {"api_url": "https://api.eu.mailgun.net/v3/"}},
            ['SUBACCOUNTS"]["mailgun"]["api_key"] is missing'],
        ),
        ({"brevo": {"api_key": "k"}}, {}, ['["email"] is required']),
        (
            {"amazon_ses": {"resource_arns": "arn:aws:ses:x"}},
            {},
            [
                "must be a non-empty list of ARNs",
                'SUBACCOUNTS"]["amazon_ses"]; set',
                "session_params",
            ],
        ),
        (
            {"amazon_ses": {"resource_arns": ["arn:x"], "client_params": 1}},
            {"amazon_ses": {"session_params": {"aws_access_key_id": "A"}}},
            ['["client_params"] must be a dict'],
        ),
    ],
)
def test_settings_are_validated_every_problem_at_once(
    raw: object, subaccounts_raw: object, fragments: list[str]
) -> None:
    with pytest.raises(TenantMailConfigurationError) as info:
        parse_provisioning(raw, subaccounts_raw)
    assert info.value.setting == 'TENANTMAIL["PROVISIONING"]'
    for fragment in fragments:
        assert fragment in str(info.value)


def test_setting_errors_never_show_a_value() -> None:
    leaked = "pm-server-token-9999999999999999"
    raw = {
        "postmark": {"account_token": POSTMARK_ACCOUNT, "tenant_options": {"server_token": leaked}},
        "brevo": {"api_key": BREVO_MASTER, "email": 5},
    }
    with pytest.raises(TenantMailConfigurationError) as info:
        parse_provisioning(raw, {})
    text = str(info.value)
    assert "remove 'server_token'" in text  # named, and copied nowhere
    assert '["email"] must be a string' in text
    assert not any(secret in text for secret in (leaked, POSTMARK_ACCOUNT, BREVO_MASTER))


def test_mailgun_region_follows_the_subaccounts_entry() -> None:
    parsed = parse_provisioning(
        {"mailgun": {}},
        {"mailgun": {"api_key": "key-x", "api_url": "https://api.eu.mailgun.net/v3/"}},
    )
    assert parsed["mailgun"].api_url == "https://api.eu.mailgun.net/"
    assert parsed["mailgun"].credential_setting == 'TENANTMAIL["SUBACCOUNTS"]["mailgun"]["api_key"]'
    default = parse_provisioning({"mailgun": {}}, {"mailgun": {"api_key": "key-x"}})
    assert default["mailgun"].api_url == "https://api.mailgun.net/"
    assert mask("key-x") not in repr(default["mailgun"])
    assert "key-x" not in repr(default["mailgun"])


def test_command_errors(tenants: Tenants, esp: FakeESP) -> None:
    with pytest.raises(CommandError, match="no tenant row has this schema name"):
        call_command("tenantmail_provision", "nobody", "--esp", "postmark", stdout=StringIO())
    accounts(esp).fail_at("postmark.create", 503)
    with pytest.raises(CommandError, match=r"'initech'.*step 'create server'.*503"):
        call_command("tenantmail_provision", "initech", "--esp", "postmark", stdout=StringIO())


@pytest.mark.parametrize(
    ("esp_name", "step", "body", "missing"),
    [
        ("mailgun", "mailgun.list", {"subaccounts": [{"name": "initech"}]}, "subaccount 'id'"),
        ("mailgun", "mailgun.create", {"subaccount": {}}, "'subaccount' with an 'id'"),
        ("postmark", "postmark.list", {"Servers": [{"Name": "initech"}]}, "server 'ID'"),
        ("postmark", "postmark.create", {"Name": "initech"}, "server 'ID'"),
        ("postmark", "postmark.create", {"ID": 7, "ApiTokens": []}, "'ApiTokens'"),
        ("brevo", "brevo.list", {"count": 1}, "'subAccounts' list"),
        ("brevo", "brevo.create", {}, "sub-account 'id'"),
        ("brevo", "brevo.key", {"status": "success"}, "'key'"),
        ("mailgun", "mailgun.list", [], "'subaccounts' list"),
    ],
)
def test_an_answer_without_the_documented_fields(
    tenants: Tenants, esp: FakeESP, esp_name: str, step: str, body: object, missing: str
) -> None:
    accounts(esp).fail_at(step, 200, body=body)
    with pytest.raises(ProvisioningError, match=rf"no {missing} \(not the documented shape"):
        provision(tenants.initech, esp_name)
    untouched(tenants.initech)


def test_an_esp_id_the_send_path_would_refuse_is_not_written(
    tenants: Tenants, esp: FakeESP
) -> None:
    accounts(esp).fail_at("mailgun.create", 200, body={"subaccount": {"id": "not an id!"}})
    with pytest.raises(ProvisioningError, match=r"step 'check the new settings'.*mail_subaccount"):
        provision(tenants.initech, "mailgun")
    untouched(tenants.initech)


def test_a_tenant_provisioned_elsewhere_needs_replace(tenants: Tenants, esp: FakeESP) -> None:
    provision(tenants.initech, "mailgun")
    with pytest.raises(TenantMailConfigurationError, match=r"mailgun_subaccount, [0-9a-f]+\)"):
        provision(Client.objects.get(pk=tenants.initech.pk), "postmark")
    moved = provision(Client.objects.get(pk=tenants.initech.pk), "postmark", replace=True)
    assert Client.objects.get(pk=tenants.initech.pk).mail_subaccount == moved.subaccount


def test_ses_error_codes_are_named_without_the_body(tenants: Tenants, esp: FakeESP) -> None:
    accounts(esp).fail_at("amazon_ses.create", 429)
    with pytest.raises(ProvisioningError, match=r"429 \(rate limited.*\): InternalFailure"):
        provision(tenants.initech, "amazon_ses")


def test_a_non_numeric_brevo_id(tenants: Tenants, esp: FakeESP) -> None:
    accounts(esp).fail_at("brevo.create", 201, body={"id": "abc"})
    with pytest.raises(ProvisioningError, match=r"no numeric sub-account 'id'"):
        provision(tenants.initech, "brevo")
    untouched(tenants.initech)


def test_ses_settings_may_carry_their_own_botocore_config(
    tenants: Tenants, esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL["SUBACCOUNTS"]["amazon_ses"]["client_params"]["config"] = {
        "user_agent_extra": "saas"
    }
    settings.TENANTMAIL = dict(settings.TENANTMAIL)
    accounts(esp).fail_at("amazon_ses.get", 500)  # one attempt: our retry setting still applies
    with pytest.raises(ProvisioningError, match="find SES tenant"):
        provision(tenants.initech, "amazon_ses")
    assert provision(tenants.initech, "amazon_ses").subaccount == "initech"
