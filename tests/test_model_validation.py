"""The tenant model applies a send's rules (``full_clean()``), all problems at once, and refuses to
send a kept secret to a destination someone else chose (``clean()`` and ``save()``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import ACME_KEY, HOOLI_PASSWORD, Tenants, acme_options
from tests.tenants_app.models import Client
from tests.test_admin import ClientMailForm, field, post

EVIL_URL = "https://collector.attacker.example/v3"


def problems(tenant: Client) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        tenant.full_clean()
    return caught.value.message_dict


def test_a_backend_without_its_credential_fails_full_clean(tenants: Tenants) -> None:
    # Observed: passed full_clean(), save() and manage.py check; failed only at send time.
    tenants.initech.mail_backend = "mailgun"
    found = problems(tenants.initech)
    assert list(found) == ["mail_options"]
    assert "needs 'api_key'" in found["mail_options"][0]
    assert "tenant 'initech'" in found["mail_options"][0]


def test_full_clean_lists_every_problem_by_field_without_quoting_values(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    secret = "s3cr3t-value-never-shown-9876"
    tenants.acme.mail_options = {
        "api_key": 5,
        "sender_domain": "mg.acme.example",
        "idna_encoder": secret,
        "webhook_secret": f"{secret}\n",
    }
    tenants.acme.mail_defaults = {"bogus": 1, "from_email": "a@acme.example\nBcc: x@evil.example"}
    found = problems(tenants.acme)
    options, defaults = " | ".join(found["mail_options"]), " | ".join(found["mail_defaults"])
    assert "option 'api_key' must be str" in options
    assert "'idna_encoder' may not be set" in options
    assert "'webhook_secret' contains control characters" in options
    assert "needs 'api_key'" in options  # the bad key does not hide the missing one
    assert "unknown key 'bogus'" in defaults
    assert "'from_email' contains a line break" in defaults
    assert secret not in str(found)


def test_a_valid_tenant_passes_full_clean(tenants: Tenants) -> None:
    for tenant in (tenants.acme, tenants.globex, tenants.hooli, tenants.initech):
        tenant.full_clean()


def test_options_without_a_backend_fail_full_clean(tenants: Tenants) -> None:
    tenants.initech.mail_options = {"api_key": "key-initech-55555555555"}
    assert "mail_backend is blank" in problems(tenants.initech)["mail_options"][0]


def test_defaults_that_are_not_an_object_are_a_field_error(tenants: Tenants) -> None:
    tenants.initech.mail_backend = "mailgun"
    tenants.initech.mail_options = {"api_key": "key-initech-55555555555"}
    tenants.initech.mail_defaults = []
    found = problems(tenants.initech)
    assert "must be a JSON object" in found["mail_defaults"][0]
    assert NON_FIELD_ERRORS not in found


# -- the endpoint may not move without the secret ------------------------------------------------


@pytest.mark.parametrize("write", ["save", "full_clean"])
def test_a_new_api_url_with_the_kept_key_is_refused(
    tenants: Tenants, fake_esp: FakeESP, write: str
) -> None:
    acme = tenants.acme
    acme.mail_options = {**acme.mail_options, "api_url": EVIL_URL}
    if write == "save":
        with pytest.raises(TenantMailConfigurationError) as caught:
            acme.save()
        message = str(caught.value)
    else:
        message = problems(acme)["mail_options"][0]
    assert "tenant 'acme', mail_options: api_url changed" in message
    assert "api_key" in message
    assert ACME_KEY not in message
    assert Client.objects.get(pk=acme.pk).mail_options == acme_options(fake_esp)


def test_a_new_smtp_host_or_port_with_the_kept_password_is_refused(
    tenants: Tenants, fake_smtp: FakeSMTP
) -> None:
    for change in ({"host": "smtp.attacker.example"}, {"port": 2526}):
        hooli = Client.objects.get(pk=tenants.hooli.pk)
        hooli.mail_options = {**hooli.mail_options, **change}
        with pytest.raises(TenantMailConfigurationError, match="password") as caught:
            hooli.save()
        assert HOOLI_PASSWORD not in str(caught.value)


def test_the_endpoint_may_move_with_a_new_secret_or_when_confirmed(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = tenants.acme
    acme.mail_options = {**acme.mail_options, "api_url": EVIL_URL, "api_key": "key-new-66666666"}
    acme.full_clean()
    acme.save()
    # ... and after that save, the new key is the one being tracked.
    acme.mail_options = {**acme.mail_options, "api_url": fake_esp.mailgun_api_url}
    with pytest.raises(TenantMailConfigurationError):
        acme.save()
    acme.confirm_mail_endpoint_change()
    acme.save()
    acme.refresh_from_db()
    assert acme.mail_options["api_url"] == fake_esp.mailgun_api_url
    # Other edits, and dropping the endpoint, need no confirmation.
    acme.mail_options = {k: v for k, v in acme.mail_options.items() if k != "api_url"}
    acme.name = "Acme Corp"
    acme.save()


def test_a_new_tenant_and_deferred_options_are_not_tracked(tenants: Tenants) -> None:
    fresh = Client(schema_name="newco", name="Newco", mail_backend="mailgun")
    fresh.mail_options = {"api_key": "key-newco-7777777777", "api_url": EVIL_URL}
    assert fresh._moved_secrets_error() is None
    deferred = Client.objects.defer("mail_options").get(pk=tenants.acme.pk)
    deferred.name = "Acme Renamed"
    deferred.save()


def form_errors(form: ClientMailForm, name: str) -> str:
    assert not form.is_valid()
    return " ".join(form.errors.get(name, []))


def test_the_admin_form_wants_the_secret_again_for_a_new_api_url(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    form = post(tenants.acme, **{field("api_url"): EVIL_URL})
    assert "enter it again" in form_errors(form, field("api_key"))
    assert ACME_KEY not in str(form.errors)
    assert Client.objects.get(pk=tenants.acme.pk).mail_options["api_url"] != EVIL_URL

    # Typing the same key again is the proof of knowing it: accepted and saved.
    form = post(tenants.acme, **{field("api_url"): EVIL_URL, field("api_key"): ACME_KEY})
    assert form.is_valid(), form.errors
    form.save()
    assert Client.objects.get(pk=tenants.acme.pk).mail_options["api_url"] == EVIL_URL


def test_the_admin_form_wants_the_password_again_for_a_new_smtp_host(tenants: Tenants) -> None:
    form = post(tenants.hooli, **{field("host"): "smtp.attacker.example"})
    assert "enter it again" in form_errors(form, field("password"))
    form = post(tenants.hooli, **{field("port"): "2526"})
    assert "SMTP port" in form_errors(form, field("password"))


def test_the_admin_form_wants_other_secrets_again_for_a_new_endpoint(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = Client.objects.get(pk=tenants.acme.pk)
    acme.mail_options = {**acme.mail_options, "webhook_secret": "whsec-8888888888888"}
    acme.save()
    form = post(acme, **{field("api_url"): EVIL_URL, field("api_key"): ACME_KEY})
    assert "enter it again" in form_errors(form, "mail_options_other")


def test_unchanged_endpoint_keeps_secrets_without_asking(tenants: Tenants) -> None:
    form: Any = post(tenants.acme, name="Acme Two")
    assert form.is_valid(), form.errors


def test_ses_keys_kept_in_session_params_do_not_follow_a_new_endpoint(tenants: Tenants) -> None:
    # Review finding: session_params is an endpoint option *and* where SES keeps the AWS keys.
    keys = {"aws_access_key_id": "AKIATENANT000000001", "aws_secret_access_key": "s3cr3t-ses-99"}
    initech = tenants.initech
    initech.mail_backend = "amazon_ses"
    initech.mail_options = {
        "session_params": {**keys, "region_name": "eu-west-1"},
        "client_params": {"endpoint_url": "https://email.eu-west-1.amazonaws.com"},
    }
    initech.save()
    initech = Client.objects.get(pk=initech.pk)
    initech.mail_options = {
        **initech.mail_options,
        "client_params": {"endpoint_url": "https://collector.attacker.example"},
    }
    with pytest.raises(TenantMailConfigurationError, match="session_params") as caught:
        initech.save()
    assert keys["aws_secret_access_key"] not in str(caught.value)


def test_loading_a_deferred_field_does_not_bless_unsaved_options(tenants: Tenants) -> None:
    # Review finding: Django loads a deferred field through refresh_from_db(fields=[...]).
    acme = Client.objects.defer("name").get(pk=tenants.acme.pk)
    acme.mail_options = {**acme.mail_options, "api_url": EVIL_URL}
    assert acme.name  # loads the deferred field
    with pytest.raises(TenantMailConfigurationError, match="api_url changed"):
        acme.save()


def test_a_new_backend_with_every_secret_typed_in_may_move_the_endpoint(
    tenants: Tenants, settings: Any
) -> None:
    # Review finding: switching backend skipped the form's endpoint bookkeeping, so the model's
    # save() refused what the form had accepted (a 500 in the admin).
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "postmark", "smtp", "tenantmail.smtp.EmailBackend"],
    }
    hooli = Client.objects.get(pk=tenants.hooli.pk)
    form = post(
        hooli,
        mail_backend="tenantmail.smtp.EmailBackend",
        **{field("host"): "smtp.elsewhere.example", field("password"): HOOLI_PASSWORD},
    )
    assert form.is_valid(), form.errors
    form.save()
    stored = Client.objects.get(pk=hooli.pk)
    assert (stored.mail_backend, stored.mail_options["host"]) == (
        "tenantmail.smtp.EmailBackend",
        "smtp.elsewhere.example",
    )
