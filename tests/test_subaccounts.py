"""Sub-account mode: tenants holding no secret send as their ESP sub-account with the parent key."""

from __future__ import annotations

from typing import Any

import pytest
from anymail.exceptions import AnymailConfigurationError
from django.core.mail import EmailMessage
from django.db import connection
from django_tenants.utils import tenant_context

from tenantmail import mailer
from tenantmail.config import resolve
from tenantmail.esp.mailgun import MailgunSubaccountBackend
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.subaccounts import parse_subaccounts
from tenantmail.tenancy import ActiveTenant, tenant_cache
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, PLATFORM_KEY, Tenants
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

PARENT_KEY = "key-parent-9999999999999999abcd"
SPARKPOST_PARENT = "sp-parent-8888888888888888efgh"
AWS_KEY_ID, AWS_SECRET = "AKIAPARENT0000000001", "parent-aws-secret-7777777777777"


def parents(esp: FakeESP) -> dict[str, Any]:
    return {
        "mailgun": {"api_key": PARENT_KEY, "api_url": esp.mailgun_api_url},
        "sparkpost": {"api_key": SPARKPOST_PARENT, "api_url": esp.sparkpost_api_url},
        "amazon_ses": {
            "session_params": {
                "aws_access_key_id": AWS_KEY_ID,
                "aws_secret_access_key": AWS_SECRET,
                "region_name": "eu-west-1",
            },
            "client_params": {"endpoint_url": esp.amazon_ses_endpoint_url},
        },
    }


@pytest.fixture
def subaccounts(settings: Any, fake_esp: FakeESP) -> dict[str, Any]:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "SUBACCOUNTS": parents(fake_esp)}
    return parents(fake_esp)


def as_subaccount(tenant: Client, backend: str, identifier: str, **fields: Any) -> Client:
    tenant.mail_backend = backend
    tenant.mail_options = {}
    tenant.mail_subaccount = identifier
    for name, value in fields.items():
        setattr(tenant, name, value)
    tenant.save()
    tenant_cache.invalidate()
    return tenant


def send(tenant: Client, subject: str, **attrs: Any) -> int:
    msg = EmailMessage(subject, "body", "app@saas.example", ["customer@example.com"])
    for name, value in attrs.items():
        setattr(msg, name, value)
    with tenant_context(tenant):
        return mailer().send_messages([msg])


def test_on_behalf_of_header_only_for_the_right_tenant(
    tenants: Tenants, fake_esp: FakeESP, subaccounts: object
) -> None:
    one = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    two = as_subaccount(tenants.globex, "mailgun_subaccount", "sa-globex")
    for round_ in range(3):  # interleaved, so warm pooled connections are reused in between
        for tenant in (one, tenants.acme, two):
            assert send(tenant, f"{tenant.schema_name} {round_}") == 1
        mailer().send_messages([EmailMessage("platform", "b", to=["x@example.com"])])
    connection.set_schema_to_public()

    received = fake_esp.wait_for(12)
    by_tenant: dict[str, list[Any]] = {}
    for m in received:
        by_tenant.setdefault(m.subject.split()[0], []).append(m)
    assert {(m.credential, m.on_behalf_of) for m in by_tenant["initech"]} == {
        (PARENT_KEY, "sa-initech")
    }
    assert {(m.credential, m.on_behalf_of) for m in by_tenant["globex"]} == {
        (PARENT_KEY, "sa-globex")
    }
    # The own-key tenant and platform mail never carry a header, nor the parent key.
    assert {(m.credential, m.on_behalf_of) for m in by_tenant["acme"]} == {(ACME_KEY, None)}
    assert {(m.credential, m.on_behalf_of) for m in by_tenant["platform"]} == {(PLATFORM_KEY, None)}
    assert all(m.metadata.get("tenant") in (None, m.subject.split()[0]) for m in received)
    # Two sub-accounts never share a connection (whose session carries the header).
    initech_conns = {m.connection_id for m in by_tenant["initech"]}
    globex_conns = {m.connection_id for m in by_tenant["globex"]}
    assert initech_conns.isdisjoint(globex_conns)


def test_an_identifier_alone_does_not_select_the_parent_key(
    tenants: Tenants, fake_esp: FakeESP, subaccounts: object
) -> None:
    # acme keeps its own Mailgun key; a stray identifier does nothing without the backend.
    tenants.acme.mail_subaccount = "sa-acme"
    tenants.acme.save()
    tenant_cache.invalidate()
    send(tenants.acme, "own")
    (received,) = fake_esp.wait_for(1)
    assert (received.credential, received.on_behalf_of) == (ACME_KEY, None)


def test_changing_the_identifier_changes_the_config(
    tenants: Tenants, fake_esp: FakeESP, subaccounts: object
) -> None:
    # Regression: the resolved-config cache was keyed without the identifier.
    tenant = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-first")
    first = resolve(ActiveTenant("initech", tenant))
    tenant.mail_subaccount = "sa-second"
    second = resolve(ActiveTenant("initech", tenant))
    assert first.options["subaccount_id"] == "sa-first"
    assert second.options["subaccount_id"] == "sa-second"
    assert first.pool_key != second.pool_key


def test_parent_key_never_on_the_row_nor_in_repr(tenants: Tenants, subaccounts: object) -> None:
    tenant = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT mail_options::text, mail_subaccount FROM tenants_app_client WHERE id = %s",
            [tenant.pk],
        )
        stored = " ".join(str(v) for v in cursor.fetchone())
    assert PARENT_KEY not in stored
    assert PARENT_KEY[-4:] not in stored
    config = resolve(ActiveTenant("initech", Client.objects.get(pk=tenant.pk)))
    assert config.own_account
    assert config.tenant == "initech"
    # Errors building the inner backend point at the parent's options, not the tenant's.
    assert config.setting_name == 'TENANTMAIL["SUBACCOUNTS"]["mailgun"]'
    text = repr(config)
    assert PARENT_KEY not in text
    assert f"…{PARENT_KEY[-4:]}" in text
    assert "sa-initech" in text


@pytest.mark.parametrize(
    ("change", "setting", "fragment"),
    [
        ({"mail_subaccount": ""}, "mail_subaccount", "operator sets it"),
        ({"mail_subaccount": "sa\r\nX-Evil: 1"}, "mail_subaccount", "sub-account id"),
        ({"mail_options": {"api_key": "key-own-000000000000000"}}, "mail_options", "empty"),
        (
            {"mail_defaults": {"esp_extra": {"o:tag": "x"}}},
            "mail_defaults",
            "not available in sub-account mode",
        ),
    ],
)
def test_tenant_side_errors(
    tenants: Tenants,
    fake_esp: FakeESP,
    subaccounts: object,
    change: dict[str, Any],
    setting: str,
    fragment: str,
) -> None:
    tenant = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech", **change)
    with pytest.raises(TenantMailConfigurationError) as info:
        send(tenant, "refused")
    assert info.value.setting == setting
    assert "initech" in str(info.value)
    assert fragment in str(info.value)
    assert PARENT_KEY not in str(info.value)
    assert fake_esp.messages == []


def test_missing_parent_credential_names_the_setting(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    tenant = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    with pytest.raises(TenantMailConfigurationError, match=r'SUBACCOUNTS"\]\["mailgun"\]'):
        send(tenant, "no parent")
    settings.TENANTMAIL = {**settings.TENANTMAIL, "SUBACCOUNTS": {"mailgun": {"api_url": "x"}}}
    with pytest.raises(TenantMailConfigurationError, match="needs 'api_key'") as info:
        send(tenant, "no key")
    assert "initech" in str(info.value)
    assert fake_esp.messages == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([], "must be a dict"),
        ({"postmark": {}}, "unknown ESP"),
        ({"mailgun": "key"}, "must be a dict"),
        ({"mailgun": {"api_key": "k", "subaccount_id": "x"}}, "may not set 'subaccount_id'"),
        ({"amazon_ses": {"alias": "x"}}, "may not set 'alias'"),
    ],
)
def test_subaccounts_setting_is_validated(raw: object, fragment: str) -> None:
    with pytest.raises(TenantMailConfigurationError, match=fragment) as info:
        parse_subaccounts(raw)
    assert info.value.setting == 'TENANTMAIL["SUBACCOUNTS"]'


def test_sparkpost_subaccount(tenants: Tenants, fake_esp: FakeESP, subaccounts: object) -> None:
    tenant = as_subaccount(tenants.initech, "sparkpost_subaccount", "4207")
    assert send(tenant, "spark") == 1
    (received,) = fake_esp.wait_for(1)
    assert received.esp == "sparkpost"
    assert (received.credential, received.on_behalf_of) == (SPARKPOST_PARENT, "4207")
    assert received.metadata == {"tenant": "initech"}


def test_ses_tenant_name_is_set_by_the_platform(
    tenants: Tenants, fake_esp: FakeESP, subaccounts: object
) -> None:
    tenant = as_subaccount(tenants.initech, "amazon_ses_tenant", "initech-ses")
    assert send(tenant, "ses") == 1
    # The same name in a message's own esp_extra is harmless ...
    assert send(tenant, "same", esp_extra={"TenantName": "initech-ses"}) == 1
    received = fake_esp.wait_for(2)
    assert {(m.esp, m.credential, m.on_behalf_of) for m in received} == {
        ("amazon_ses", AWS_KEY_ID, "initech-ses")
    }
    assert received[0].metadata == {"tenant": "initech"}
    # ... another tenant's is refused, not silently rewritten.
    with pytest.raises(AnymailConfigurationError, match="TenantName"):
        send(tenant, "other", esp_extra={"TenantName": "globex-ses"})
    assert len(fake_esp.messages) == 2


def test_ses_tenant_name_not_overridable_through_tenant_defaults(
    tenants: Tenants, fake_esp: FakeESP, subaccounts: object
) -> None:
    for key in ("TenantName", "tenantname"):
        tenant = as_subaccount(
            tenants.initech,
            "amazon_ses_tenant",
            "initech-ses",
            mail_defaults={"esp_extra": {key: "globex-ses"}},
        )
        with pytest.raises(TenantMailConfigurationError) as info:
            send(tenant, "refused")
        assert info.value.setting == "mail_defaults"
    assert fake_esp.messages == []


@pytest.mark.parametrize(
    "path",
    [
        "tenantmail.esp.mailgun.MailgunSubaccountBackend",
        "tenantmail.esp.sparkpost.SparkPostSubaccountBackend",
        "tenantmail.esp.amazon_ses.AmazonSESTenantBackend",
    ],
)
def test_backends_refuse_a_missing_identifier(path: str) -> None:
    from django.utils.module_loading import import_string

    with pytest.raises(AnymailConfigurationError, match="mail_subaccount"):
        import_string(path)(api_key="k")


def test_mailgun_header_is_on_the_session_not_the_message(fake_esp: FakeESP) -> None:
    backend = MailgunSubaccountBackend(
        subaccount_id="sa-1", api_key=PARENT_KEY, api_url=fake_esp.mailgun_api_url
    )
    with backend:
        assert backend.session.headers["X-Mailgun-On-Behalf-Of"] == "sa-1"
        msg = EmailMessage("s", "b", "a@mg.example", ["c@example.com"])
        backend.send_messages([msg])
    (received,) = fake_esp.wait_for(1)
    assert received.on_behalf_of == "sa-1"
    assert "X-Mailgun-On-Behalf-Of" not in msg.extra_headers


def test_w010_allowed_sub_account_backend_without_parent(settings: Any) -> None:
    from tenantmail.checks import check_settings

    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "mailgun_subaccount", "sparkpost_subaccount"],
        "SUBACCOUNTS": {"sparkpost": {"api_key": SPARKPOST_PARENT}},
    }
    (warning,) = check_settings()
    assert warning.id == "tenantmail.W010"
    assert "MailgunSubaccountBackend" in warning.msg
    assert SPARKPOST_PARENT not in warning.msg
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "SUBACCOUNTS": {"mailgun": {"api_key": PARENT_KEY}, "sparkpost": {"api_key": "k"}},
    }
    assert check_settings() == []


def test_w010_not_raised_for_the_default_allow_list(settings: Any) -> None:
    from tenantmail.checks import check_settings

    assert "ALLOWED_BACKENDS" not in settings.TENANTMAIL
    assert check_settings() == []


def test_an_esp_401_points_at_the_parent_credential_without_showing_it(
    tenants: Tenants, fake_esp: FakeESP, subaccounts: object
) -> None:
    from anymail.exceptions import AnymailAPIError

    tenant = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    fake_esp.fail_next(401, "Forbidden")
    with pytest.raises(AnymailAPIError) as info:
        send(tenant, "refused by the ESP")
    text = "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert "'initech'" in text
    assert 'sub-account, with the parent credential in TENANTMAIL["SUBACCOUNTS"]["mailgun"]' in text
    assert PARENT_KEY not in text


def test_w010_check_tolerates_a_malformed_setting(settings: Any) -> None:
    # The checks parse TENANTMAIL leniently and run every check; W010 must not crash then.
    from tenantmail.checks import check_settings

    settings.TENANTMAIL = "mailgun"
    ids = [message.id for message in check_settings()]
    assert "tenantmail.E001" in ids
    assert "tenantmail.W010" not in ids
