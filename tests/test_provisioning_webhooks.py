"""Provisioning registers the tenant's tracking webhook (Postmark, Brevo): the credential it
generates is the one the ESP sends and the one the tenant's webhook view then accepts."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient

from tenantmail import signals
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.masking import mask
from tenantmail.provisioning import ProvisioningError, provision
from tenantmail.testing import FakeESP
from tenantmail.testing_provisioning import accounts
from tenantmail.webhooks import tracking_url
from tenantmail.webhooks.testing import brevo_post, postmark_post
from tests.conftest import Tenants
from tests.provisioning_helpers import esp, provisioning_settings
from tests.tenants_app.models import Client

__all__ = ["esp", "provisioning_settings"]  # fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("provisioning_settings")]

BASE = "https://saas.example"


@pytest.fixture
def events() -> Iterator[list[tuple[str | None, str]]]:
    got: list[tuple[str | None, str]] = []

    def receiver(sender: Any, tenant: str | None, event: Any, **kw: Any) -> None:
        got.append((tenant, event.event_type))

    signals.tracking.connect(receiver, dispatch_uid="test-provisioning-webhooks")
    yield got
    signals.tracking.disconnect(dispatch_uid="test-provisioning-webhooks")


def post(url: str, payload: tuple[bytes, str, dict[str, str]]) -> int:
    body, content_type, headers = payload
    response = HttpClient().post(
        url, data=body, content_type=content_type, HTTP_HOST="localhost", **headers
    )
    return int(response.status_code)


def stored_secret(tenant: Client, esp_name: str) -> str:
    row = Client.objects.get(pk=tenant.pk)
    return str(row.mail_webhook_secrets[esp_name]["webhook_secret"])


def test_postmark_webhook_credential_reaches_the_view(
    tenants: Tenants, esp: FakeESP, events: list[Any]
) -> None:
    result = provision(tenants.initech, "postmark", webhook_base_url=BASE)

    path = tracking_url(tenants.initech, "postmark")
    [hook] = accounts(esp).postmark_webhooks.values()
    [server] = accounts(esp).postmark.values()
    assert hook["token"] == server["ApiTokens"][0]  # registered on the tenant's own server
    assert hook["Url"] == BASE + path
    assert hook["MessageStream"] == "outbound"
    assert hook["Triggers"]["Delivery"]["Enabled"]
    secret = f"{hook['HttpAuth']['Username']}:{hook['HttpAuth']['Password']}"
    assert stored_secret(tenants.initech, "postmark") == secret
    assert result.webhook == BASE + path
    assert (
        result.fields["mail_webhook_secrets"]
        == f"{{'postmark': {{'webhook_secret': {mask(secret)}}}}}"
    )
    assert secret not in repr(result)

    assert post(path, postmark_post(secret)) == 200
    assert post(path, postmark_post("esp-000000000000:wrong")) == 400
    assert events == [("initech", "delivered")]


def test_brevo_webhook_credential_reaches_the_view(
    tenants: Tenants, esp: FakeESP, events: list[Any]
) -> None:
    provision(tenants.initech, "brevo", webhook_base_url=BASE)

    path = tracking_url(tenants.initech, "brevo")
    [hook] = accounts(esp).brevo_webhooks.values()
    [key] = next(iter(accounts(esp).brevo_keys.values()))
    assert hook["key"] == key
    assert hook["type"] == "transactional"
    assert "delivered" in hook["events"]
    secret = stored_secret(tenants.initech, "brevo")
    assert hook["url"] == f"https://{secret}@saas.example{path}"
    assert post(path, brevo_post(secret)) == 200
    assert events == [("initech", "delivered")]


@pytest.mark.parametrize("esp_name", ["postmark", "brevo"])
def test_a_provisioned_tenant_gets_only_its_webhook(
    tenants: Tenants, esp: FakeESP, esp_name: str
) -> None:
    first = provision(tenants.initech, esp_name)
    state = accounts(esp)
    state.calls.clear()

    result = provision(Client.objects.get(pk=tenants.initech.pk), esp_name, webhook_base_url=BASE)

    assert state.steps() == [f"{esp_name}.webhooks", f"{esp_name}.register_webhook"]
    assert result.already_provisioned
    assert result.subaccount == first.subaccount
    assert "webhook registered at https://saas.example/" in result.summary()
    assert stored_secret(tenants.initech, esp_name)

    state.calls.clear()
    again = provision(Client.objects.get(pk=tenants.initech.pk), esp_name, webhook_base_url=BASE)
    assert state.steps() == []  # provisioned, webhook secret stored: nothing to do
    assert "nothing to do" in again.summary()


@pytest.mark.parametrize("esp_name", ["postmark", "brevo"])
def test_a_lost_webhook_secret_is_replaced_not_duplicated(
    tenants: Tenants, esp: FakeESP, esp_name: str
) -> None:
    provision(tenants.initech, esp_name, webhook_base_url=BASE)
    old = stored_secret(tenants.initech, esp_name)
    Client.objects.filter(pk=tenants.initech.pk).update(mail_webhook_secrets={})

    provision(Client.objects.get(pk=tenants.initech.pk), esp_name, webhook_base_url=BASE)

    state = accounts(esp)
    hooks = state.postmark_webhooks if esp_name == "postmark" else state.brevo_webhooks
    assert len(hooks) == 1
    assert f"{esp_name}.update_webhook" in state.steps()
    new = stored_secret(tenants.initech, esp_name)
    assert new != old
    assert post(tracking_url(tenants.initech, esp_name), _payload(esp_name, new)) == 200


def _payload(esp_name: str, secret: str) -> tuple[bytes, str, dict[str, str]]:
    return postmark_post(secret) if esp_name == "postmark" else brevo_post(secret)


def test_dry_run_with_webhooks(tenants: Tenants, esp: FakeESP) -> None:
    result = provision(tenants.initech, "postmark", dry_run=True, webhook_base_url=BASE)
    assert accounts(esp).steps() == ["postmark.list"]
    assert any(s.startswith("would register the tracking webhook") for s in result.steps)
    assert "(generated, stored encrypted)" in result.fields["mail_webhook_secrets"]
    assert "webhook would be registered at" in result.summary()


def test_a_failed_registration_writes_nothing_and_resumes(tenants: Tenants, esp: FakeESP) -> None:
    accounts(esp).fail_at("postmark.register_webhook", 500)
    with pytest.raises(ProvisioningError) as info:
        provision(tenants.initech, "postmark", webhook_base_url=BASE)
    assert info.value.step == "register webhook"
    assert "already created at postmark by this run: Postmark server 'initech'" in str(info.value)
    assert "tracking webhook" not in str(info.value)  # its registration is what failed
    row = Client.objects.get(pk=tenants.initech.pk)
    assert (row.mail_backend, row.mail_webhook_secrets) == ("", {})

    provision(Client.objects.get(pk=tenants.initech.pk), "postmark", webhook_base_url=BASE)
    assert len(accounts(esp).postmark) == 1
    assert len(accounts(esp).postmark_webhooks) == 1
    assert stored_secret(tenants.initech, "postmark")


@pytest.mark.parametrize(
    ("esp_name", "base", "message"),
    [
        ("mailgun", BASE, "registering mailgun webhooks is not supported"),
        ("postmark", "saas.example", "must be the platform's origin"),
        ("postmark", "https://user:pw@saas.example", "must be the platform's origin"),
    ],
)
def test_webhook_requests_refused_up_front(
    tenants: Tenants, esp: FakeESP, esp_name: str, base: str, message: str
) -> None:
    with pytest.raises(TenantMailConfigurationError, match=message):
        provision(tenants.initech, esp_name, webhook_base_url=base)
    assert accounts(esp).calls == []


def test_command_with_webhooks(tenants: Tenants, esp: FakeESP) -> None:
    out = StringIO()
    call_command(
        "tenantmail_provision",
        "initech",
        "--esp",
        "brevo",
        "--webhooks",
        "--base-url",
        BASE,
        stdout=out,
    )
    text = out.getvalue()
    assert "POST webhooks: registered https://saas.example/" in text
    assert "set mail_webhook_secrets = {'brevo': {'webhook_secret': …" in text
    assert stored_secret(tenants.initech, "brevo") not in text
    with pytest.raises(CommandError, match="--webhooks and --base-url go together"):
        call_command("tenantmail_provision", "initech", "--esp", "brevo", "--webhooks")


@pytest.mark.parametrize(
    ("method", "path", "header", "empty"),
    [
        ("GET", "postmark/webhooks", "X-Postmark-Server-Token", 200),
        ("POST", "postmark/webhooks", "X-Postmark-Server-Token", 422),
        ("PUT", "postmark/webhooks/1", "X-Postmark-Server-Token", 404),
        ("GET", "brevo/v3/webhooks", "api-key", 200),
        ("POST", "brevo/v3/webhooks", "api-key", 400),
        ("PUT", "brevo/v3/webhooks/1", "api-key", 404),
        ("POST", "brevo/v3/smtp/email", "api-key", 400),
    ],
)
def test_fake_webhook_and_send_apis_check_key_and_body(
    method: str, path: str, header: str, empty: int
) -> None:
    import requests

    with FakeESP(valid_credentials={"good-key-000000000000"}) as fake:
        url = fake.base_url + path
        refused = requests.request(method, url, headers={header: "bad"}, json={}, timeout=5)
        assert refused.status_code == 401
        answered = requests.request(
            method, url, headers={header: "good-key-000000000000"}, json={}, timeout=5
        )
        assert answered.status_code == empty  # an empty body: refused, unknown, or an empty list
        assert fake.messages == []


def test_outcome_repr_hides_the_key() -> None:
    from tenantmail.provisioning.outcome import Outcome

    assert repr(Outcome("1001", "secret-token-0000")) == "Outcome(subaccount='1001', secret=…)"


def test_a_write_failure_names_the_registered_webhook(tenants: Tenants, esp: FakeESP) -> None:
    stale = Client.objects.get(pk=tenants.initech.pk)
    Client.objects.filter(pk=stale.pk).update(mail_backend="smtp")  # someone else, meanwhile
    with pytest.raises(ProvisioningError) as info:
        provision(stale, "postmark", webhook_base_url=BASE)
    text = str(info.value)
    assert info.value.step == "write the tenant"
    assert f"the tracking webhook {BASE}{tracking_url(stale, 'postmark')}" in text
