"""Resolving what a tenant sends with: overrides > the tenant's config > the platform default.

Every refusal is a TenantMailConfigurationError that names the tenant and the setting to fix,
never contains a credential, and sends nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMessage
from django.test import override_settings

from tenantmail import mailer
from tenantmail.backends import TenantBackend
from tenantmail.config import resolve
from tenantmail.crypto import generate_key
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.factory import HAS_MAILERS
from tenantmail.fields import UndecryptableOptions
from tenantmail.masking import SecretDict
from tenantmail.models import TenantMailSource
from tenantmail.tenancy import ActiveTenant
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import (
    ACME_KEY,
    GLOBEX_TOKEN,
    HOOLI_PASSWORD,
    HOOLI_USER,
    PLATFORM_KEY,
    Tenants,
    acme_options,
    globex_options,
)
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

MAILGUN = "anymail.backends.mailgun.EmailBackend"
POSTMARK = "anymail.backends.postmark.EmailBackend"
TENANT_BACKEND = "tenantmail.backends.TenantBackend"
# Distinctive values that must never show up in an error message, a repr or a log line.
CANARY = "key-canary-7f3e9d1c5b2a8f4e60"
CANARY_TOKEN = "pm-canary-4b8e2f6a1d9c3e7b51"
CANARY_PASSWORD = "smtp-canary-9d2c6e1f8a3b77"
DEFAULT_SETTING = 'TENANTMAIL["DEFAULT"]'

needs_mailers = pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS needs Django 6.1+")


def message(subject: str = "Hello") -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"])


def assert_config_error(
    error: TenantMailConfigurationError,
    *,
    tenant: str | None,
    setting: str,
    secrets: Iterable[str] = (),
) -> str:
    """The error names the tenant and the setting, and no secret; returns its text."""
    text = str(error)
    assert error.tenant == tenant
    assert error.setting == setting
    assert setting in text
    if tenant is not None:
        assert f"tenant {tenant!r}" in text
    shown = " ".join([text, repr(error), *getattr(error, "__notes__", [])])
    for secret in (ACME_KEY, GLOBEX_TOKEN, HOOLI_PASSWORD, PLATFORM_KEY, *secrets):
        assert secret not in shown
    return text


def send_error(backend: TenantBackend) -> TenantMailConfigurationError:
    with pytest.raises(TenantMailConfigurationError) as excinfo:
        backend.send_messages([message()])
    return excinfo.value


def set_mail(tenant: Client, **fields: Any) -> Client:
    for name, value in fields.items():
        setattr(tenant, name, value)
    tenant.save()
    return Client.objects.get(pk=tenant.pk)


# -- precedence ----------------------------------------------------------------------------


def test_precedence_is_overrides_then_tenant_then_platform(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    mailer(tenant=tenants.acme).send_messages([message("tenant")])
    mailer(tenant=tenants.acme, api_key=CANARY).send_messages([message("tenant+override")])
    mailer(tenant=tenants.initech).send_messages([message("platform")])
    mailer(tenant=tenants.initech, sender_domain="mg.other.example").send_messages(
        [message("platform+override")]
    )
    got = {m.subject: (m.credential, m.sender_domain) for m in fake_esp.wait_for(4)}
    assert got == {
        "tenant": (ACME_KEY, "mg.acme.example"),
        "tenant+override": (CANARY, "mg.acme.example"),
        "platform": (PLATFORM_KEY, "mg.saas.example"),
        "platform+override": (PLATFORM_KEY, "mg.other.example"),
    }


def test_resolve_reports_where_the_config_came_from(tenants: Tenants, fake_esp: FakeESP) -> None:
    own = resolve(ActiveTenant("acme", tenants.acme), {"api_key": CANARY})
    assert own.backend == MAILGUN
    assert dict(own.options) == {**acme_options(fake_esp), "api_key": CANARY}
    assert isinstance(own.options, SecretDict)
    assert (own.tenant, own.own_account, own.mailer_alias) == ("acme", True, None)
    assert own.setting_name == "mail_options"
    assert own.pool_key == ("acme", own.fingerprint)

    platform = resolve(None)
    assert platform.backend == MAILGUN
    assert platform.options["api_key"] == PLATFORM_KEY
    assert (platform.tenant, platform.own_account, dict(platform.defaults)) == (None, False, {})
    assert platform.setting_name == DEFAULT_SETTING
    assert platform.pool_key == (None, platform.fingerprint)


def test_none_valued_overrides_are_ignored(tenants: Tenants, fake_esp: FakeESP) -> None:
    # Django's send_mail() passes username=None/password=None: "not given", not "blank".
    mailer(tenant=tenants.acme, api_key=None, sender_domain=None).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert (received.credential, received.sender_domain) == (ACME_KEY, "mg.acme.example")

    hooli = TenantBackend(tenant=tenants.hooli, username=None, password=None).resolve()
    assert (hooli.options["username"], hooli.options["password"]) == (HOOLI_USER, HOOLI_PASSWORD)


@pytest.mark.filterwarnings("ignore:The EMAIL_.* setting is deprecated")
def test_tenant_smtp_without_login_never_uses_the_platform_login(
    tenants: Tenants, fake_smtp: FakeSMTP, settings: Any
) -> None:
    settings.EMAIL_HOST_USER = "platform-user"
    settings.EMAIL_HOST_PASSWORD = CANARY_PASSWORD
    hooli = set_mail(tenants.hooli, mail_options={"host": fake_smtp.host, "port": fake_smtp.port})
    config = mailer(tenant=hooli).resolve()
    assert (config.options["username"], config.options["password"]) == ("", "")
    mailer(tenant=hooli).send_messages([message()])
    (received,) = fake_smtp.wait_for(1)
    assert received.credential == ""  # no AUTH at all, certainly not the platform's


# -- the platform default ------------------------------------------------------------------


def test_blank_backend_uses_the_platform_account_with_the_tenants_defaults(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    initech = set_mail(tenants.initech, mail_defaults={"from_email": "hello@initech.example"})
    mailer(tenant=initech).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.credential == PLATFORM_KEY
    assert received.sender_domain == "mg.saas.example"
    assert received.from_email == "hello@initech.example"
    assert received.metadata == {"tenant": "initech"}

    config = mailer(tenant=initech).resolve()
    assert (config.tenant, config.own_account) == ("initech", False)
    assert dict(config.defaults) == {"from_email": "hello@initech.example"}
    # Every tenant on the platform account shares the platform's connections.
    assert config.pool_key == (None, resolve(None).fingerprint)


def test_options_without_a_backend_are_an_error(tenants: Tenants, fake_esp: FakeESP) -> None:
    initech = set_mail(tenants.initech, mail_options={"api_key": CANARY})
    text = assert_config_error(
        send_error(mailer(tenant=initech)),
        tenant="initech",
        setting="mail_options",
        secrets=[CANARY],
    )
    assert "mail_backend is blank" in text
    assert fake_esp.messages == []


def test_missing_config_raise_refuses_tenants_without_their_own_account(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MISSING_CONFIG": "raise"}
    text = assert_config_error(
        send_error(mailer(tenant=tenants.initech)), tenant="initech", setting="mail_backend"
    )
    assert 'TENANTMAIL["MISSING_CONFIG"] is "raise"' in text
    assert fake_esp.messages == []
    # Tenants with their own account, and platform mail, are unaffected.
    mailer(tenant=tenants.acme).send_messages([message("acme")])
    mailer(tenant="public").send_messages([message("platform")])
    got = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert got == {"acme": ACME_KEY, "platform": PLATFORM_KEY}


def test_default_backend_that_is_tenant_backend_is_refused(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {"BACKEND": TENANT_BACKEND, "OPTIONS": {"api_key": CANARY}},
    }
    # A platform-level error: it names the setting, not the tenant that happened to send.
    for backend in (mailer(tenant=tenants.initech), mailer()):
        text = assert_config_error(
            send_error(backend), tenant=None, setting=DEFAULT_SETTING, secrets=[CANARY]
        )
        assert "TenantBackend itself" in text
    assert fake_esp.messages == []
    # The platform default is only consulted when needed: acme's own account still works.
    mailer(tenant=tenants.acme).send_messages([message()])
    assert [m.credential for m in fake_esp.wait_for(1)] == [ACME_KEY]


def test_default_naming_a_missing_mailers_alias_is_refused(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": "nosuch"}
    for backend in (mailer(tenant=tenants.initech), mailer()):
        text = assert_config_error(send_error(backend), tenant=None, setting=DEFAULT_SETTING)
        assert "'nosuch'" in text
        assert "not in settings.MAILERS" in text
    assert fake_esp.messages == []


def test_default_naming_a_tenant_backend_mailer_is_refused(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.MAILERS = {
        **getattr(settings, "MAILERS", {}),
        "loop": {"BACKEND": TENANT_BACKEND, "OPTIONS": {"api_key": CANARY}},
    }
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": "loop"}
    text = assert_config_error(
        send_error(mailer(tenant=tenants.initech)),
        tenant=None,
        setting=DEFAULT_SETTING,
        secrets=[CANARY],
    )
    assert "'loop'" in text
    assert "TenantBackend" in text
    assert fake_esp.messages == []


@needs_mailers
def test_default_can_be_a_mailers_alias(tenants: Tenants, fake_esp: FakeESP, settings: Any) -> None:
    settings.MAILERS = {
        **settings.MAILERS,
        "platform": {
            "BACKEND": MAILGUN,
            "OPTIONS": {
                "api_key": CANARY,
                "sender_domain": "mg.mailers.example",
                "api_url": fake_esp.mailgun_api_url,
            },
        },
    }
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": "platform"}
    mailer(tenant=tenants.initech).send_messages([message("initech")])
    mailer().send_messages([message("public")])
    got = {m.subject: (m.credential, m.sender_domain) for m in fake_esp.wait_for(2)}
    assert got == {
        "initech": (CANARY, "mg.mailers.example"),
        "public": (CANARY, "mg.mailers.example"),
    }
    config = mailer(tenant=tenants.initech).resolve()
    assert (config.mailer_alias, config.own_account) == ("platform", False)
    assert config.setting_name == "MAILERS['platform']"
    assert CANARY not in repr(config)


@needs_mailers
def test_mailers_alias_with_bad_options_names_the_mailer(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.MAILERS = {
        **settings.MAILERS,
        "platform": {
            "BACKEND": MAILGUN,
            "OPTIONS": {"api_key": CANARY, "api_url": fake_esp.mailgun_api_url, "bogus": 1},
        },
    }
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": "platform"}
    text = assert_config_error(
        send_error(mailer(tenant=tenants.initech)),
        tenant="initech",
        setting="MAILERS['platform']",
        secrets=[CANARY],
    )
    assert "'bogus'" in text
    assert fake_esp.messages == []


def test_default_backend_that_cannot_be_imported(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {"BACKEND": "tenantmail_nosuch.EmailBackend", "OPTIONS": {"key": CANARY}},
    }
    text = assert_config_error(
        send_error(mailer()), tenant=None, setting=DEFAULT_SETTING, secrets=[CANARY]
    )
    assert "cannot import 'tenantmail_nosuch.EmailBackend'" in text


# -- the allow-list and the backend itself -------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.mail.backends.filebased.EmailBackend",
        "os.system",
        "anymail.backends.test.EmailBackend",
        "tenantmail.backends.TenantBackend",
    ],
)
def test_backend_outside_the_allow_list_is_refused(
    tenants: Tenants, fake_esp: FakeESP, backend: str
) -> None:
    acme = set_mail(tenants.acme, mail_backend=backend)
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_backend"
    )
    assert f"backend {backend!r} is not allowed" in text
    assert 'TENANTMAIL["ALLOWED_BACKENDS"]' in text
    assert fake_esp.messages == []


def test_allow_list_is_configurable_and_takes_short_names(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["postmark"]}
    mailer(tenant=tenants.globex).send_messages([message()])
    assert [m.credential for m in fake_esp.wait_for(1)] == [GLOBEX_TOKEN]
    text = assert_config_error(
        send_error(mailer(tenant=tenants.acme)), tenant="acme", setting="mail_backend"
    )
    assert "'mailgun' is not allowed" in text
    assert len(fake_esp.messages) == 1


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("os.path.join", "'os.path.join' is not a Django email backend"),
        ("tenantmail.masking.SecretDict", "is not a Django email backend"),
        ("tenantmail_nosuch.backends.EmailBackend", "cannot import"),
    ],
)
def test_allowed_path_that_is_not_a_mail_backend(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, path: str, problem: str
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["mailgun", path]}
    acme = set_mail(tenants.acme, mail_backend=path)
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_backend"
    )
    assert problem in text
    assert fake_esp.messages == []


@pytest.mark.filterwarnings("ignore:The EMAIL_.* setting is deprecated")
@pytest.mark.parametrize(
    ("schema", "missing"), [("acme", "api_key"), ("globex", "server_token"), ("hooli", "host")]
)
@pytest.mark.parametrize("how", ["absent", "blank", "null"])
def test_missing_required_credential_never_falls_back_to_the_platform(
    tenants: Tenants,
    fake_esp: FakeESP,
    fake_smtp: FakeSMTP,
    settings: Any,
    schema: str,
    missing: str,
    how: str,
) -> None:
    # Anymail (and Django's SMTP backend before 6.1) would silently use these platform settings,
    # sending the platform's credential to wherever the tenant's api_url points.
    settings.ANYMAIL = {"MAILGUN_API_KEY": CANARY, "POSTMARK_SERVER_TOKEN": CANARY_TOKEN}
    settings.EMAIL_HOST, settings.EMAIL_PORT = fake_smtp.host, fake_smtp.port
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "platform", CANARY_PASSWORD
    tenant = getattr(tenants, schema)
    options = dict(tenant.mail_options)
    if how == "absent":
        del options[missing]
    else:
        options[missing] = "" if how == "blank" else None
    tenant = set_mail(tenant, mail_options=options)

    text = assert_config_error(
        send_error(mailer(tenant=tenant)),
        tenant=schema,
        setting="mail_options",
        secrets=[CANARY, CANARY_TOKEN, CANARY_PASSWORD],
    )
    assert f"needs {missing!r}" in text
    assert fake_esp.messages == []
    assert fake_smtp.messages == []


@pytest.mark.parametrize("options", [["api_key", CANARY], CANARY, 42])
def test_options_must_be_a_json_object(
    tenants: Tenants, fake_esp: FakeESP, options: object
) -> None:
    acme = set_mail(tenants.acme, mail_options=options)
    assert acme.mail_options == options
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options", secrets=[CANARY]
    )
    assert f"must be a JSON object of {MAILGUN}'s options, got {type(options).__name__}" in text
    assert fake_esp.messages == []


@pytest.mark.parametrize("name", ["api-key", "2fa", "", "with space", "api_key\n"])
def test_option_names_must_be_identifiers(tenants: Tenants, fake_esp: FakeESP, name: str) -> None:
    acme = set_mail(tenants.acme, mail_options={**acme_options(fake_esp), name: CANARY})
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options", secrets=[CANARY]
    )
    assert "option names must be the backend's keyword arguments" in text
    assert fake_esp.messages == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("alias", "sneaky"),
        ("fail_silently", True),
        ("idna_encoder", "os.system"),  # Anymail would import and call it
        ("debug_api_requests", True),  # Anymail would print the Authorization header
        ("ssl_keyfile", "/etc/ssl/private/platform.key"),
        ("ssl_certfile", "/etc/ssl/certs/platform.pem"),
    ],
)
def test_options_a_tenant_may_never_set(
    tenants: Tenants, fake_esp: FakeESP, name: str, value: object
) -> None:
    acme = set_mail(tenants.acme, mail_options={**acme_options(fake_esp), name: value})
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options"
    )
    assert f"option {name!r} may not be set by a tenant" in text
    assert fake_esp.messages == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"api_url": 5}, "option 'api_url' must be str, got int"),
        ({"api_key": 12345678901234567}, "option 'api_key' must be str, got int"),
        ({"api_key": [CANARY]}, "option 'api_key' must be str, got list"),
        ({"port": "2525"}, "option 'port' must be int, got str"),
        ({"port": True}, "option 'port' must be int, got bool"),
        ({"use_tls": "yes"}, "option 'use_tls' must be bool, got str"),
        ({"timeout": "10"}, "option 'timeout' must be int or float, got str"),
        ({"api_key": CANARY + "\n"}, "option 'api_key' contains control characters"),
        ({"api_key": CANARY + "\x00"}, "option 'api_key' contains control characters"),
        ({"api_key": "clé-" + CANARY}, "option 'api_key' must be ASCII"),
        ({"api_key": CANARY * 200}, "option 'api_key' is longer than 4096 characters"),
        ({"client_params": {"region": "eu\r\n" + CANARY}}, "option 'client_params' contains"),
    ],
)
def test_option_values_are_checked_by_name_without_quoting_them(
    tenants: Tenants, fake_esp: FakeESP, extra: dict[str, Any], problem: str
) -> None:
    acme = set_mail(tenants.acme, mail_options={**acme_options(fake_esp), **extra})
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options", secrets=[CANARY]
    )
    assert problem in text
    assert fake_esp.messages == []


def test_public_option_values_may_be_non_ascii(tenants: Tenants, fake_esp: FakeESP) -> None:
    # An internationalized sender domain is fine; only credentials must be ASCII.
    acme = set_mail(
        tenants.acme, mail_options={**acme_options(fake_esp), "sender_domain": "mg.bücher.example"}
    )
    config = mailer(tenant=acme).resolve()
    assert config.options["sender_domain"] == "mg.bücher.example"


def test_non_string_option_names_are_refused(tenants: Tenants, fake_esp: FakeESP) -> None:
    # JSON only has string keys, but get_mail_config() may compute options in Python.
    acme = tenants.acme
    acme.mail_options = {**acme_options(fake_esp), 7: CANARY}
    assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options", secrets=[CANARY]
    )
    assert fake_esp.messages == []


@needs_mailers
def test_unknown_option_is_a_configuration_error_on_django_61(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = set_mail(tenants.acme, mail_options={**acme_options(fake_esp), "api_kye": CANARY})
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options", secrets=[CANARY]
    )
    assert f"{MAILGUN} rejected the options" in text
    assert "'api_kye'" in text
    assert fake_esp.messages == []


def test_options_the_backend_rejects_are_a_configuration_error(
    tenants: Tenants, fake_smtp: FakeSMTP
) -> None:
    # Django 6.1 raises InvalidMailer, older versions ValueError: both become a config error.
    hooli = set_mail(
        tenants.hooli, mail_options={**tenants.hooli.mail_options, "use_tls": True, "use_ssl": True}
    )
    text = assert_config_error(
        send_error(mailer(tenant=hooli)), tenant="hooli", setting="mail_options"
    )
    assert "django.core.mail.backends.smtp.EmailBackend rejected the options" in text
    assert fake_smtp.messages == []


def test_option_colliding_with_the_constructor_signature(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    # "self" is a valid identifier, but cls(self=...) is a TypeError whose text is dropped.
    acme = set_mail(tenants.acme, mail_options={**acme_options(fake_esp), "self": CANARY})
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options", secrets=[CANARY]
    )
    assert "rejected the options (TypeError)" in text
    assert fake_esp.messages == []


def test_undecryptable_options_are_a_clear_error(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ENCRYPTION_KEYS": [generate_key()]}
    acme = Client.objects.get(schema_name="acme")
    assert isinstance(acme.mail_options, UndecryptableOptions)
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="mail_options"
    )
    assert 'no key in TENANTMAIL["ENCRYPTION_KEYS"] decrypts it' in text
    assert acme.mail_options.token not in text
    assert fake_esp.messages == []


# -- get_mail_config() ---------------------------------------------------------------------


def test_get_mail_config_must_return_a_tenant_mail_source(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = tenants.acme
    acme.get_mail_config = lambda: {"backend": "mailgun", "options": {"api_key": CANARY}}  # type: ignore[method-assign]
    text = assert_config_error(
        send_error(mailer(tenant=acme)), tenant="acme", setting="get_mail_config", secrets=[CANARY]
    )
    assert "must return a TenantMailSource, got dict" in text
    assert fake_esp.messages == []


def test_get_mail_config_override_decides_the_account(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = tenants.acme
    acme.get_mail_config = lambda: TenantMailSource(  # type: ignore[method-assign]
        backend="postmark", options=globex_options(fake_esp), defaults={"tags": ["plan-b"]}
    )
    mailer(tenant=acme).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert (received.esp, received.credential) == ("postmark", GLOBEX_TOKEN)
    assert received.metadata == {"tenant": "acme"}


def test_tenant_model_without_the_mixin_uses_the_platform(tenants: Tenants) -> None:
    config = resolve(ActiveTenant("acme", object()))
    assert (config.tenant, config.own_account) == ("acme", False)
    assert config.options["api_key"] == PLATFORM_KEY


# -- fingerprint, repr, error formatting ---------------------------------------------------


def test_fingerprint_changes_exactly_when_backend_or_options_change(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    first = mailer(tenant=tenants.acme).resolve().fingerprint
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    # Stable: a fresh instance, another TenantBackend, the dotted path instead of the short name.
    assert mailer(tenant=Client.objects.get(schema_name="acme")).resolve().fingerprint == first
    dotted = set_mail(tenants.acme, mail_backend=MAILGUN)
    assert mailer(tenant=dotted).resolve().fingerprint == first

    overridden = mailer(tenant=dotted, api_key=CANARY).resolve().fingerprint
    assert overridden != first
    assert mailer(tenant=dotted, api_key=CANARY).resolve().fingerprint == overridden
    # A saved credential change moves the fingerprint (to the same place as the override did).
    rotated = set_mail(dotted, mail_options=acme_options(fake_esp, api_key=CANARY))
    assert mailer(tenant=rotated).resolve().fingerprint == overridden

    platform = resolve(None).fingerprint
    assert mailer(tenant=tenants.initech).resolve().fingerprint == platform
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {
            "BACKEND": "mailgun",
            "OPTIONS": {**settings.TENANTMAIL["DEFAULT"]["OPTIONS"], "api_key": CANARY_TOKEN},
        },
    }
    assert resolve(None).fingerprint not in (platform, first, overridden)


def test_new_credentials_are_used_by_the_very_next_send(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    backend = mailer(tenant="acme")
    backend.send_messages([message("before")])
    set_mail(tenants.acme, mail_options=acme_options(fake_esp, api_key=CANARY))
    backend.send_messages([message("after")])
    got = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert got == {"before": ACME_KEY, "after": CANARY}


def test_rejected_credential_makes_the_next_send_reread_the_tenant(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "TENANT_CACHE_SECONDS": 3600}
    backend = mailer(tenant="acme")
    backend.send_messages([message("cached")])
    # Another process rotates the key: no signal reaches this process's tenant cache.
    Client.objects.filter(schema_name="acme").update(
        mail_options=acme_options(fake_esp, api_key=CANARY)
    )
    fake_esp.fail_next(401, '{"message": "Invalid private key"}')
    with pytest.raises(AnymailAPIError, match="401"):
        backend.send_messages([message("rejected")])
    backend.send_messages([message("retried")])
    got = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert got == {"cached": ACME_KEY, "retried": CANARY}


def test_reprs_never_show_a_secret(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = tenants.acme
    acme.mail_options = {
        **acme_options(fake_esp, api_key=CANARY),
        "client_options": {"token": CANARY_TOKEN},
        "short": "pw",
    }
    backend = mailer(tenant=acme, password=CANARY_PASSWORD)
    config = backend.resolve()
    for text in (repr(config), str(config), repr(config.options), str(config.options)):
        for secret in (CANARY, CANARY_TOKEN, CANARY_PASSWORD):
            assert secret not in text
    shown = repr(config)
    assert "tenant='acme'" in shown
    assert "'sender_domain': 'mg.acme.example'" in shown  # harmless options stay readable
    assert f"'api_key': '…{CANARY[-4:]}'" in shown
    assert "'client_options': {'token': '…7b51'}" in shown
    assert "'short': '****'" in shown

    assert repr(backend) == ("<TenantBackend alias=None tenant='acme' overrides=['password']>")
    assert repr(mailer(tenant="globex", api_key=CANARY)) == (
        "<TenantBackend alias=None tenant='globex' overrides=['api_key']>"
    )
    assert repr(TenantBackend()) == "<TenantBackend alias=None tenant=None overrides=[]>"


def test_fail_silently_never_hides_a_configuration_error(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    acme = set_mail(tenants.acme, mail_backend="os.system")
    with pytest.raises(TenantMailConfigurationError, match="not allowed"):
        mailer(tenant=acme, fail_silently=True).send_messages([message()])
    hooli = set_mail(tenants.hooli, mail_options={"host": "localhost", "self": 1})
    with pytest.raises(TenantMailConfigurationError, match=r"rejected the options"):
        mailer(tenant=hooli, fail_silently=True).send_messages([message()])
    assert fake_esp.messages == []


def test_error_message_format() -> None:
    assert str(TenantMailConfigurationError("plain")) == "plain"
    assert str(TenantMailConfigurationError("m", setting="S")) == "S: m"
    assert str(TenantMailConfigurationError("m", tenant="t")) == "tenant 't': m"
    both = TenantMailConfigurationError("m", tenant="t", setting="S")
    assert (str(both), both.tenant, both.setting) == ("tenant 't', S: m", "t", "S")


def test_settings_change_is_picked_up_without_restart(tenants: Tenants, fake_esp: FakeESP) -> None:
    with (
        override_settings(TENANTMAIL={"DEFAULT": {"BACKEND": TENANT_BACKEND}}),
        pytest.raises(TenantMailConfigurationError),
    ):
        mailer(tenant=tenants.initech).send_messages([message()])
    mailer(tenant=tenants.initech).send_messages([message()])
    assert [m.credential for m in fake_esp.wait_for(1)] == [PLATFORM_KEY]
