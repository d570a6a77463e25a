"""EncryptedJSONField: ciphertext at rest, masked in Python, rotatable, never lost, never shown."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django import forms
from django.core import serializers
from django.core.mail import EmailMessage
from django.core.management import CommandError, call_command
from django.db import connection

from tenantmail import mailer
from tenantmail.crypto import generate_key
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.fields import (
    EncryptedJSONField,
    SecretJSONFormField,
    SecretJSONWidget,
    UndecryptableOptions,
)
from tenantmail.masking import SecretDict
from tenantmail.testing import FakeESP
from tests import settings as test_settings
from tests.conftest import (
    ACME_KEY,
    GLOBEX_TOKEN,
    HOOLI_PASSWORD,
    Tenants,
    acme_options,
    globex_options,
)
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

TEST_KEY = str(test_settings.TENANTMAIL["ENCRYPTION_KEYS"][0])  # type: ignore[index]
CANARY = "key-canary-0e4d8b2f6a1c9e3d75"
CANARY_NEW = "key-canary-new-5c1a7e3b9d2f8a64"
SECRETS = (ACME_KEY, GLOBEX_TOKEN, HOOLI_PASSWORD)


def raw_options(schema: str) -> str:
    """The column as PostgreSQL holds it, bypassing the field entirely."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT mail_options FROM public.tenants_app_client WHERE schema_name = %s", [schema]
        )
        (value,) = cursor.fetchone()
    return str(value)


def all_raw_options() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT schema_name, mail_options FROM public.tenants_app_client")
        return {schema: str(value) for schema, value in cursor.fetchall()}


def write_raw_options(schema: str, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE public.tenants_app_client SET mail_options = %s WHERE schema_name = %s",
            [value, schema],
        )


def decrypt_with(key: str, token: str) -> Any:
    return json.loads(Fernet(key.encode()).decrypt(token.encode()))


def fresh(schema: str) -> Client:
    return Client.objects.get(schema_name=schema)


def use_keys(settings: Any, *keys: str) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ENCRYPTION_KEYS": list(keys)}


# -- at rest -------------------------------------------------------------------------------


def test_column_holds_only_a_fernet_token(tenants: Tenants, fake_esp: FakeESP) -> None:
    raw = raw_options("acme")
    for plain in (*SECRETS, "api_key", "mg.acme.example", fake_esp.mailgun_api_url):
        assert plain not in raw
    assert raw.startswith("gAAAAA")  # Fernet version byte 0x80, base64url
    assert decrypt_with(TEST_KEY, raw) == acme_options(fake_esp)
    assert decrypt_with(TEST_KEY, raw_options("globex")) == globex_options(fake_esp)
    assert GLOBEX_TOKEN not in raw_options("globex")
    assert HOOLI_PASSWORD not in raw_options("hooli")
    # Even "no options" is ciphertext, not a readable "{}".
    assert decrypt_with(TEST_KEY, raw_options("initech")) == {}


def test_round_trip(tenants: Tenants) -> None:
    options = {
        "api_key": CANARY,
        "nested": {"list": [1, "café", None, 2.5], "flag": True},
        "unicode": "日本語",
    }
    acme = tenants.acme
    acme.mail_options = options
    acme.save()
    assert CANARY not in raw_options("acme")
    assert "café" not in raw_options("acme")
    loaded = fresh("acme").mail_options
    assert loaded == options
    assert type(loaded) is SecretDict
    values = Client.objects.filter(schema_name="acme").values_list("mail_options", flat=True)
    assert list(values) == [options]


def test_loaded_options_print_masked(tenants: Tenants, fake_esp: FakeESP) -> None:
    options = fresh("acme").mail_options
    for text in (repr(options), str(options), f"{options}", repr(vars(fresh("acme")))):
        assert ACME_KEY not in text
    assert "'api_key': '…1111'" in repr(options)
    assert "'sender_domain': 'mg.acme.example'" in repr(options)
    assert f"'api_url': '{fake_esp.mailgun_api_url}'" in repr(options)
    assert repr(options).startswith("SecretDict(")


def test_empty_column_loads_as_empty(tenants: Tenants, fake_esp: FakeESP) -> None:
    write_raw_options("initech", "")
    initech = fresh("initech")
    assert initech.mail_options == ""
    # An empty column means "no options": the platform account.
    mailer(tenant=initech).send_messages([EmailMessage("s", "b", to=["x@example.com"])])
    assert [m.sender_domain for m in fake_esp.wait_for(1)] == ["mg.saas.example"]


# -- key rotation --------------------------------------------------------------------------


def test_key_rotation_reencrypts_every_row_under_the_new_key(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    before = all_raw_options()
    tokens = sum(1 for value in before.values() if value)
    assert tokens >= 5  # public, acme, globex, initech, hooli
    new_key = generate_key()
    use_keys(settings, new_key, TEST_KEY)
    # Prepending a key changes nothing for existing rows: the old key still decrypts.
    assert fresh("acme").mail_options == acme_options(fake_esp)

    out = StringIO()
    call_command("tenantmail_reencrypt", stdout=out)
    assert out.getvalue() == (
        f"re-encrypted mail_options of {tokens} tenant(s) still on an old key; "
        "0 already on the newest key.\n"
        f"re-encrypted mail_webhook_secrets of {tokens} tenant(s) still on an old key; "
        "0 already on the newest key.\n"
    )
    assert ACME_KEY not in out.getvalue()

    after = all_raw_options()
    for schema, token in after.items():
        assert token != before[schema]
        with pytest.raises(InvalidToken):
            Fernet(TEST_KEY.encode()).decrypt(token.encode())
    assert decrypt_with(new_key, after["acme"]) == acme_options(fake_esp)

    use_keys(settings, new_key)  # the old key is gone
    assert fresh("acme").mail_options == acme_options(fake_esp)
    assert fresh("globex").mail_options == globex_options(fake_esp)
    assert fresh("hooli").mail_options["password"] == HOOLI_PASSWORD
    mailer(tenant="acme").send_messages([EmailMessage("s", "b", to=["x@example.com"])])
    assert [m.credential for m in fake_esp.wait_for(1)] == [ACME_KEY]


def test_reencrypt_rotates_webhook_secrets_too(tenants: Tenants, settings: Any) -> None:
    tenants.acme.mail_webhook_secrets = {"mailgun": {"webhook_signing_key": CANARY}}
    tenants.acme.save()
    new_key = generate_key()
    use_keys(settings, new_key, TEST_KEY)
    out = StringIO()
    call_command("tenantmail_reencrypt", stdout=out)
    assert CANARY not in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT mail_webhook_secrets FROM public.tenants_app_client WHERE schema_name = %s",
            ["acme"],
        )
        (token,) = cursor.fetchone()
    assert decrypt_with(new_key, token) == {"mailgun": {"webhook_signing_key": CANARY}}
    use_keys(settings, new_key)  # the old key is gone
    assert fresh("acme").mail_webhook_secrets == {"mailgun": {"webhook_signing_key": CANARY}}


def test_reencrypt_dry_run_writes_nothing(tenants: Tenants, settings: Any) -> None:
    before = all_raw_options()
    tokens = sum(1 for value in before.values() if value)
    use_keys(settings, generate_key(), TEST_KEY)
    out = StringIO()
    call_command("tenantmail_reencrypt", "--dry-run", stdout=out)
    assert out.getvalue() == (
        f"would re-encrypt mail_options of {tokens} tenant(s) still on an old key; "
        "0 already on the newest key.\n"
        f"would re-encrypt mail_webhook_secrets of {tokens} tenant(s) still on an old key; "
        "0 already on the newest key.\n"
    )
    assert all_raw_options() == before


def test_reencrypt_skips_empty_columns(tenants: Tenants, settings: Any) -> None:
    tokens = sum(1 for value in all_raw_options().values() if value)
    write_raw_options("initech", "")
    use_keys(settings, generate_key(), TEST_KEY)
    out = StringIO()
    call_command("tenantmail_reencrypt", stdout=out)
    assert out.getvalue().splitlines()[0] == (
        f"re-encrypted mail_options of {tokens - 1} tenant(s) still on an old key; "
        "0 already on the newest key."
    )
    assert raw_options("initech") == ""


def test_reencrypt_needs_the_mixin(settings: Any) -> None:
    settings.TENANT_MODEL = "auth.User"
    with pytest.raises(CommandError, match=r"^auth\.User does not use TenantMailMixin\.$"):
        call_command("tenantmail_reencrypt", stdout=StringIO())


# -- a row no key decrypts -----------------------------------------------------------------


def foreign_token(key: str, options: dict[str, Any]) -> str:
    return Fernet(key.encode()).encrypt(json.dumps(options).encode()).decode()


def test_undecryptable_row_is_kept_and_reported(tenants: Tenants, settings: Any) -> None:
    lost_key = generate_key()
    token = foreign_token(lost_key, {"server_token": CANARY})
    write_raw_options("globex", token)

    globex = fresh("globex")
    assert isinstance(globex.mail_options, UndecryptableOptions)
    assert globex.mail_options.token == token
    assert (
        repr(globex.mail_options) == "UndecryptableOptions(<no configured key decrypts this value>)"
    )
    assert str(globex.mail_options) == repr(globex.mail_options)

    # Saving the tenant for another reason keeps the ciphertext: nothing is lost.
    globex.name = "Globex Corporation"
    globex.save()
    assert raw_options("globex") == token
    assert fresh("globex").name == "Globex Corporation"

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("tenantmail_reencrypt", stdout=out, stderr=err)
    message = str(excinfo.value)
    assert "no configured key decrypts mail_options of 1 tenant(s): globex." in message
    assert 'TENANTMAIL["ENCRYPTION_KEYS"]' in message
    for shown in (message, out.getvalue(), err.getvalue()):
        assert CANARY not in shown
        assert token not in shown
    assert raw_options("globex") == token

    # Adding the lost key back recovers the credential.
    use_keys(settings, TEST_KEY, lost_key)
    assert fresh("globex").mail_options == {"server_token": CANARY}


def test_non_ascii_garbage_in_the_column_loads_as_undecryptable(tenants: Tenants) -> None:
    write_raw_options("globex", '{"server_token": "clé-en-clair"}')  # e.g. a legacy plain row
    assert isinstance(fresh("globex").mail_options, UndecryptableOptions)
    with pytest.raises(CommandError, match="globex"):
        call_command("tenantmail_reencrypt", stdout=StringIO())


# -- serialization -------------------------------------------------------------------------


def test_dumpdata_writes_ciphertext(tenants: Tenants, fake_esp: FakeESP) -> None:
    field = Client._meta.get_field("mail_options")
    assert isinstance(field, EncryptedJSONField)
    text = field.value_to_string(tenants.acme)
    assert ACME_KEY not in text
    assert decrypt_with(TEST_KEY, text) == acme_options(fake_esp)

    out = StringIO()
    call_command("dumpdata", "tenants_app.client", stdout=out)
    for secret in SECRETS:
        assert secret not in out.getvalue()

    data = serializers.serialize("json", [tenants.acme])
    assert ACME_KEY not in data
    (restored,) = serializers.deserialize("json", data)
    assert restored.object.mail_options == acme_options(fake_esp)


def test_serializing_an_undecryptable_value_keeps_its_token(tenants: Tenants) -> None:
    token = foreign_token(generate_key(), {"api_key": CANARY})
    write_raw_options("acme", token)
    field = Client._meta.get_field("mail_options")
    assert field.value_to_string(fresh("acme")) == token


def test_field_conversions() -> None:
    field = EncryptedJSONField()
    assert field.to_python({"a": 1}) == {"a": 1}
    assert field.to_python("") == ""
    assert field.to_python(None) is None
    assert field.get_prep_value(None) is None
    token = field.get_prep_value({"api_key": CANARY})
    assert CANARY not in token
    assert field.to_python(token) == {"api_key": CANARY}
    assert type(field.to_python(token)) is SecretDict
    assert field.to_python(field.get_prep_value([1, 2])) == [1, 2]


def test_loaddata_of_plaintext_never_stores_plaintext(tenants: Tenants) -> None:
    data = json.loads(serializers.serialize("json", [tenants.initech]))
    data[0]["fields"]["mail_options"] = json.dumps({"api_key": CANARY})
    try:
        for restored in serializers.deserialize("json", json.dumps(data)):
            restored.save()
    except (serializers.base.DeserializationError, TenantMailConfigurationError):
        pass  # refusing the fixture is fine too
    assert CANARY not in raw_options("initech")


# -- the key ring --------------------------------------------------------------------------


def test_keys_derive_from_secret_key_when_none_are_configured(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    use_keys(settings)
    settings.SECRET_KEY = "first-secret-key-for-tenantmail-tests-0001"
    acme = tenants.acme
    acme.save()  # re-encrypted under the derived key
    raw = raw_options("acme")
    assert ACME_KEY not in raw
    with pytest.raises(InvalidToken):
        Fernet(TEST_KEY.encode()).decrypt(raw.encode())
    assert fresh("acme").mail_options == acme_options(fake_esp)

    # Django's SECRET_KEY rotation carries these keys along ...
    settings.SECRET_KEY = "second-secret-key-for-tenantmail-tests-002"
    settings.SECRET_KEY_FALLBACKS = ["first-secret-key-for-tenantmail-tests-0001"]
    assert fresh("acme").mail_options == acme_options(fake_esp)
    # ... and a secret key that is gone for good takes them with it.
    settings.SECRET_KEY_FALLBACKS = []
    assert isinstance(fresh("acme").mail_options, UndecryptableOptions)


@pytest.mark.parametrize(
    "bad_key", ["not-a-fernet-key-canary-6d2e9a", "A" * 40, "ab!cd" * 9 + "=="]
)
def test_invalid_key_names_its_position_and_is_not_echoed(
    tenants: Tenants, settings: Any, bad_key: str
) -> None:
    use_keys(settings, TEST_KEY, bad_key)
    # Loading a tenant -- which every page does, the platform admin's included -- still works ...
    acme = fresh("acme")
    assert isinstance(acme.mail_options, UndecryptableOptions)
    assert [t.schema_name for t in Client.objects.filter(schema_name="acme")] == ["acme"]
    assert ACME_KEY not in TenantMailForm(instance=acme).as_p()
    # ... while sending, and writing a new credential, fail naming the entry.
    errors = []
    for action in (
        lambda: mailer(tenant=acme).send_messages([EmailMessage("s", "b", to=["x@example.com"])]),
        tenants.acme.save,  # last: a failed save() leaves the test's transaction unusable
    ):
        with pytest.raises(TenantMailConfigurationError) as excinfo:
            action()
        errors.append(excinfo.value)
    send_error, save_error = errors
    assert str(send_error).startswith("tenant 'acme', mail_options: cannot be decrypted: ")
    # Review finding: the chained key-ring error's frames held every configured key, and error
    # reports show chained exceptions' locals. Its text is quoted; the exception is not chained.
    assert send_error.__cause__ is None
    assert send_error.__suppress_context__
    assert save_error.setting == 'TENANTMAIL["ENCRYPTION_KEYS"][1]'
    assert str(save_error).startswith('TENANTMAIL["ENCRYPTION_KEYS"][1]: is not a valid')
    for error in errors:
        assert 'TENANTMAIL["ENCRYPTION_KEYS"][1]: is not a valid' in str(error)
        assert bad_key not in str(error)
    assert save_error.__cause__ is None  # the original error quotes the key
    assert save_error.__suppress_context__


# -- the form field ------------------------------------------------------------------------


class TenantMailForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Client
        fields = ("mail_backend", "mail_options", "mail_defaults")


def post(mail_options: str | None, **extra: str) -> dict[str, str]:
    data = {"mail_backend": "mailgun", "mail_defaults": '{"from_email": "hello@acme.example"}'}
    if mail_options is not None:
        data["mail_options"] = mail_options
    return {**data, **extra}


def test_form_never_renders_the_stored_options(tenants: Tenants, fake_esp: FakeESP) -> None:
    form = TenantMailForm(instance=tenants.acme)
    assert isinstance(form.fields["mail_options"], SecretJSONFormField)
    assert isinstance(form.fields["mail_options"].widget, SecretJSONWidget)
    html = str(form)
    assert "hello@acme.example" in html  # the form did render this instance ...
    for hidden in (ACME_KEY, "mg.acme.example", fake_esp.mailgun_api_url):
        assert hidden not in html  # ... but nothing of its options
    assert '<textarea name="mail_options"' in html


def test_rerendered_form_does_not_echo_a_submitted_secret(tenants: Tenants) -> None:
    form = TenantMailForm(
        data=post(json.dumps({"api_key": CANARY_NEW}), mail_defaults="{broken"),
        instance=tenants.acme,
    )
    assert not form.is_valid()
    assert "mail_defaults" in form.errors
    assert CANARY_NEW not in str(form)
    assert ACME_KEY not in str(form)


@pytest.mark.parametrize(
    "blank",
    [
        "",
        None,
        pytest.param(
            "   \n\t",
        ),
    ],
)
def test_blank_submission_keeps_the_stored_options(
    tenants: Tenants, fake_esp: FakeESP, blank: str | None
) -> None:
    form = TenantMailForm(data=post(blank), instance=tenants.acme)
    assert form.is_valid(), form.errors
    assert "mail_options" not in form.changed_data
    form.save()
    assert fresh("acme").mail_options == acme_options(fake_esp)


def test_json_object_replaces_the_stored_options(tenants: Tenants, fake_esp: FakeESP) -> None:
    new = acme_options(fake_esp, api_key=CANARY_NEW)
    form = TenantMailForm(data=post(json.dumps(new)), instance=tenants.acme)
    assert form.is_valid(), form.errors
    assert "mail_options" in form.changed_data
    form.save()
    assert fresh("acme").mail_options == new
    assert CANARY_NEW not in raw_options("acme")

    # A plain ModelForm gets the send's rules through the model's clean(): {} lacks mailgun's key.
    form = TenantMailForm(data=post("{}"), instance=fresh("acme"))
    assert not form.is_valid()
    assert "needs 'api_key'" in " ".join(form.errors["mail_options"])
    assert CANARY_NEW not in str(form.errors)

    form = TenantMailForm(data=post("{}", mail_backend=""), instance=fresh("acme"))
    assert form.is_valid(), form.errors
    form.save()
    assert fresh("acme").mail_options == {}


@pytest.mark.parametrize(
    "submitted",
    [
        "[1, 2]",
        '"a string"',
        "42",
        "true",
        "{not json",
        pytest.param(
            "null",
        ),
        pytest.param(
            '""',
        ),
    ],
)
def test_non_object_json_is_a_form_error(
    tenants: Tenants, fake_esp: FakeESP, submitted: str
) -> None:
    form = TenantMailForm(data=post(submitted), instance=tenants.acme)
    assert not form.is_valid()
    assert list(form.errors) == ["mail_options"]
    assert fresh("acme").mail_options == acme_options(fake_esp)


def test_widget_renders_no_value_whatever_it_is_given() -> None:
    # Defence in depth: even a caller that bypasses the form field's prepare_value() gets nothing.
    widget = SecretJSONWidget()
    for value in ({"api_key": CANARY}, json.dumps({"api_key": CANARY})):
        html = widget.render("mail_options", value)
        assert CANARY not in html
        assert html.startswith('<textarea name="mail_options"')


def test_masked_initial_for_help_texts(tenants: Tenants) -> None:
    field = SecretJSONFormField()
    shown = json.loads(field.masked_initial(tenants.acme.mail_options))
    assert shown["api_key"] == "…1111"
    assert shown["sender_domain"] == "mg.acme.example"
    assert field.masked_initial("not a dict") == ""
    assert field.prepare_value(tenants.acme.mail_options) is None
