"""Malformed tenant configurations: each a clear error naming tenant + setting, never a secret.

For every row: the error is a TenantMailConfigurationError (even with fail_silently=True), its
message names the tenant's schema and the setting to fix, it contains no credential, the fake ESP
received nothing, and afterwards every other tenant still sends normally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connection
from django_tenants.utils import schema_context

from tenantmail import mailer
from tenantmail.exceptions import TenantMailConfigurationError, UnknownTenantError
from tenantmail.factory import HAS_MAILERS
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants, acme_options

pytestmark = pytest.mark.django_db

CANARY = "key-CANARY-bad-input-5eb63bbbe01eeed0"


@dataclass(frozen=True)
class Bad:
    id: str
    setting: str
    backend: str = "mailgun"
    options: Any = field(default_factory=dict)
    defaults: Any = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    only_with_mailers: bool = False


def mg(esp: FakeESP, **extra: Any) -> dict[str, Any]:
    return {**acme_options(esp, api_key=CANARY), **extra}


def table(esp: FakeESP, smtp: FakeSMTP) -> list[Bad]:
    smtp_ok = {"host": smtp.host, "port": smtp.port, "password": CANARY}
    return [
        Bad("unknown backend", "mail_backend", backend="nosuch", options=mg(esp)),
        Bad("file backend", "mail_backend", "django.core.mail.backends.filebased.EmailBackend"),
        Bad("dotted path to a function", "mail_backend", backend="os.system"),
        Bad(
            "allowed path that is not a backend",
            "mail_backend",
            backend="json.dumps",
            settings={"ALLOWED_BACKENDS": ["json.dumps"]},
        ),
        Bad(
            "allowed path that does not import",
            "mail_backend",
            backend="anymail.backends.nosuch.EmailBackend",
            settings={"ALLOWED_BACKENDS": ["anymail.backends.nosuch.EmailBackend"]},
        ),
        Bad("options are a list", "mail_options", options=[CANARY]),
        Bad("options are a string", "mail_options", options=f"api_key={CANARY}"),
        Bad("unknown option", "mail_options", options=mg(esp, bogus=1), only_with_mailers=True),
        Bad("missing credential", "mail_options", options={"sender_domain": "mg.acme.example"}),
        Bad("blank credential", "mail_options", options=mg(esp, api_key="")),
        Bad("postmark without token", "mail_options", backend="postmark", options={"x": 1}),
        Bad("smtp without host", "mail_options", backend="smtp", options={"password": CANARY}),
        Bad("credential of the wrong type", "mail_options", options=mg(esp, api_key=12345)),
        Bad("port of the wrong type", "mail_options", "smtp", {**smtp_ok, "port": "25"}),
        Bad("port that is a bool", "mail_options", "smtp", {**smtp_ok, "port": True}),
        Bad("timeout that is text", "mail_options", options=mg(esp, requests_timeout="x")),
        Bad(
            "tls and ssl together",
            "mail_options",
            "smtp",
            {**smtp_ok, "use_tls": True, "use_ssl": True},
        ),
        Bad("oversized credential", "mail_options", options=mg(esp, api_key="k" * 5000)),
        Bad("non-ASCII credential", "mail_options", options=mg(esp, api_key=CANARY + "é")),
        Bad("newline in a credential", "mail_options", options=mg(esp, api_key=CANARY + "\n")),
        Bad("idna_encoder runs code", "mail_options", options=mg(esp, idna_encoder="os.system")),
        Bad("debug prints the key", "mail_options", options=mg(esp, debug_api_requests=True)),
        Bad("platform key file", "mail_options", "smtp", {**smtp_ok, "ssl_keyfile": "/etc/k"}),
        Bad("options without backend", "mail_options", backend="", options=mg(esp)),
        Bad("defaults not an object", "mail_defaults", options=mg(esp), defaults=["x"]),
        Bad("unknown default", "mail_defaults", options=mg(esp), defaults={"bcc": ["a@b.c"]}),
        Bad("tags not a list", "mail_defaults", options=mg(esp), defaults={"tags": "welcome"}),
        Bad(
            "header injection in from_email",
            "mail_defaults",
            options=mg(esp),
            defaults={"from_email": "a@acme.example\nBcc: victim@example.com"},
        ),
        Bad(
            "header injection in headers",
            "mail_defaults",
            options=mg(esp),
            defaults={"headers": {"X-Campaign": "x\r\nBcc: victim@example.com"}},
        ),
        Bad(
            "oversized default",
            "mail_defaults",
            options=mg(esp),
            defaults={"metadata": {"note": "n" * 5000}},
        ),
        Bad("null option (crashed Anymail)", "mail_options", options=mg(esp, api_url=None)),
        Bad("SES without the tenant's AWS keys", "mail_options", backend="amazon_ses"),
        Bad("send_defaults option", "mail_options", options=mg(esp, send_defaults={"bcc": []})),
        Bad(
            "esp_extra spoofing the trace",
            "mail_defaults",
            options=mg(esp),
            defaults={"esp_extra": {"v:tenant": "globex"}},
        ),
        Bad(
            "esp_extra on the platform account",
            "mail_defaults",
            backend="",
            defaults={"esp_extra": {"sender_domain": "mg.globex.example"}},
        ),
        Bad(
            "missing config with MISSING_CONFIG=raise",
            "mail_backend",
            backend="",
            settings={"MISSING_CONFIG": "raise"},
        ),
    ]


def _assert_others_still_send(tenants: Tenants, fake_esp: FakeESP) -> None:
    fake_esp.clear()
    mailer(tenant="globex").send_messages([EmailMessage("ok", "b", to=["a@example.com"])])
    mailer(tenant="initech").send_messages([EmailMessage("ok", "b", to=["a@example.com"])])
    credentials = sorted(m.credential for m in fake_esp.wait_for(2))
    assert credentials == sorted([GLOBEX_TOKEN, PLATFORM_KEY])


@pytest.mark.parametrize("row", range(36), ids=lambda i: f"row{i}")
def test_bad_tenant_config(
    row: int, tenants: Tenants, fake_esp: FakeESP, fake_smtp: FakeSMTP, settings: Any
) -> None:
    rows = table(fake_esp, fake_smtp)
    assert len(rows) == 36, "keep the parametrize range in step with the table"
    bad = rows[row]
    if bad.only_with_mailers and not HAS_MAILERS:
        pytest.skip("before Django 6.1 backends ignore unknown options (no alias to report)")
    settings.TENANTMAIL = {**settings.TENANTMAIL, **bad.settings}
    acme = tenants.acme
    acme.mail_backend = bad.backend
    acme.mail_options = bad.options
    acme.mail_defaults = bad.defaults
    acme.save()

    with pytest.raises(TenantMailConfigurationError) as raised:
        mailer(tenant="acme", fail_silently=True).send_messages(
            [EmailMessage(bad.id, "b", to=["a@example.com"])]
        )

    text = str(raised.value)
    assert "'acme'" in text, text
    assert bad.setting in text, text
    assert CANARY not in text
    assert CANARY not in repr(raised.value.__cause__)
    assert fake_esp.messages == []
    assert fake_smtp.messages == []
    settings.TENANTMAIL = {k: v for k, v in settings.TENANTMAIL.items() if k not in bad.settings}
    _assert_others_still_send(tenants, fake_esp)


def test_deleted_tenant_instance(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = tenants.acme
    with connection.cursor() as cursor:
        # Drop the row, not the schema: Client.delete() would also drop the schema.
        cursor.execute("DELETE FROM tenants_app_domain WHERE tenant_id = %s", [acme.pk])
        cursor.execute("DELETE FROM tenants_app_client WHERE id = %s", [acme.pk])
    acme.pk = None  # what Model.delete() leaves behind
    with pytest.raises(UnknownTenantError, match="'acme'"):
        mailer(tenant=acme).send_messages([EmailMessage("s", "b", to=["a@example.com"])])
    with schema_context("acme"), pytest.raises(UnknownTenantError, match="'acme'"):
        mailer().send_messages([EmailMessage("s", "b", to=["a@example.com"])])
    assert fake_esp.messages == []
    _assert_others_still_send(tenants, fake_esp)


def test_schema_without_tenant_row(tenants: Tenants, fake_esp: FakeESP) -> None:
    with schema_context("orphan"), pytest.raises(UnknownTenantError) as raised:
        mailer().send_messages([EmailMessage("s", "b", to=["a@example.com"])])
    assert "'orphan'" in str(raised.value)
    assert fake_esp.messages == []


def test_valid_config_still_sends_after_a_bad_one_is_fixed(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = tenants.acme
    acme.mail_options = {"sender_domain": "mg.acme.example"}
    acme.save()
    send: Callable[[], int] = lambda: mailer(tenant="acme").send_messages(  # noqa: E731
        [EmailMessage("s", "b", to=["a@example.com"])]
    )
    with pytest.raises(TenantMailConfigurationError):
        send()
    acme.mail_options = acme_options(fake_esp)
    acme.save()
    assert send() == 1
    assert fake_esp.wait_for(1)[0].credential == ACME_KEY
