"""``manage.py tenantmail_check``: every tenant, every problem, tenant and setting named, no secret,
non-zero exit for CI."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tenantmail.crypto import generate_key
from tests.conftest import ACME_KEY, HOOLI_PASSWORD, Tenants
from tests.test_fields import TEST_KEY, foreign_token, use_keys, write_raw_options
from tests.test_settings import malformed_tenantmail


def check(*args: str) -> tuple[str, str | None]:
    out = StringIO()
    try:
        call_command("tenantmail_check", *args, stdout=out)
    except CommandError as error:
        return out.getvalue(), str(error)
    return out.getvalue(), None


def test_valid_tenants_pass(tenants: Tenants) -> None:
    assert check() == ("checked 4 tenant(s): no problems.\n", None)


def test_every_problem_of_every_tenant_is_listed_and_the_exit_is_non_zero(
    tenants: Tenants,
) -> None:
    # Observed: an ORM-saved backend without its credential passed `manage.py check`.
    tenants.initech.mail_backend = "mailgun"
    tenants.initech.save()
    tenants.hooli.mail_options = {**tenants.hooli.mail_options, "port": "25", "use_tls": "yes"}
    tenants.hooli.mail_defaults = {"reply_to": 5}
    tenants.hooli.confirm_mail_endpoint_change()
    tenants.hooli.save()

    out, error = check()
    lines = out.splitlines()
    assert lines == [
        "tenant 'hooli', mail_options: option 'port' must be int, got str",
        "tenant 'hooli', mail_options: option 'use_tls' must be bool, got str",
        "tenant 'hooli', mail_defaults: 'reply_to' has the wrong type int",
        "tenant 'initech', mail_options: anymail.backends.mailgun.EmailBackend needs 'api_key' "
        "here; without it the platform's own credentials would be used for this tenant",
    ]
    assert error == "checked 4 tenant(s): 4 problem(s) in 2 tenant(s)."
    assert HOOLI_PASSWORD not in out
    assert ACME_KEY not in out


def test_named_tenants_only_and_unknown_names_are_problems(tenants: Tenants) -> None:
    tenants.initech.mail_backend = "mailgun"
    tenants.initech.save()
    assert check("acme", "globex") == ("checked 2 tenant(s): no problems.\n", None)
    out, error = check("acme", "nosuch")
    assert out == "tenant 'nosuch': no tenant row has this schema name\n"
    assert error == "checked 1 tenant(s): 1 problem(s) in 1 tenant(s)."


def test_a_row_no_key_decrypts_is_a_problem(tenants: Tenants) -> None:
    write_raw_options("globex", foreign_token(generate_key(), {"server_token": "x" * 20}))
    out, error = check()
    assert out.startswith("tenant 'globex', mail_options: no key in TENANTMAIL")
    assert error is not None


def test_a_malformed_key_is_reported_as_the_platforms_problem(
    tenants: Tenants, settings: Any
) -> None:
    canary = "not-a-fernet-key-check-canary-42"
    use_keys(settings, TEST_KEY, canary)
    out, error = check()
    assert out.startswith('platform: TENANTMAIL["ENCRYPTION_KEYS"][1]: is not a valid Fernet key')
    assert out.rstrip().endswith("[tenantmail.E002]")
    assert error == "1 problem(s) in the TENANTMAIL settings."
    assert canary not in out


def test_malformed_settings_are_all_reported(tenants: Tenants) -> None:
    with malformed_tenantmail({"MISSING_CONFIG": "x", "METADATA_KEY": ""}):
        out, error = check()
    assert [line.split(":")[1].strip() for line in out.splitlines()] == [
        'TENANTMAIL["MISSING_CONFIG"]',
        'TENANTMAIL["METADATA_KEY"]',
    ]
    assert error == "2 problem(s) in the TENANTMAIL settings."


def test_needs_the_mixin(settings: Any) -> None:
    settings.TENANT_MODEL = "auth.User"
    with pytest.raises(CommandError, match="does not use TenantMailMixin"):
        call_command("tenantmail_check", stdout=StringIO())


def test_sub_account_tenants_are_checked_with_their_identifier(
    tenants: Tenants, settings: Any, fake_esp: Any
) -> None:
    # Review finding: mail_subaccount errors were dropped, and the draft lost the identifier.
    from tests.test_subaccounts import parents

    settings.TENANTMAIL = {**settings.TENANTMAIL, "SUBACCOUNTS": parents(fake_esp)}
    tenants.initech.mail_backend = "mailgun_subaccount"
    tenants.initech.mail_subaccount = "sa-initech-1"
    tenants.initech.save()
    assert check() == ("checked 4 tenant(s): no problems.\n", None)
    tenants.initech.mail_subaccount = ""
    tenants.initech.save()
    out, error = check()
    assert "tenant 'initech', mail_subaccount:" in out
    assert error == "checked 4 tenant(s): 1 problem(s) in 1 tenant(s)."
