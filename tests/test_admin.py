"""``tenantmail.admin``: the operator's form for a tenant's mail settings, in process.

(The browser test in tests/e2e drives the same form in the example site's admin.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django import forms
from django.contrib import admin
from django.db import connection
from django.test import RequestFactory

from tenantmail import mailer
from tenantmail.admin import (
    BACKEND_OPTION_FIELDS,
    OPTION_FIELDS,
    TenantMailAdminMixin,
    TenantMailForm,
    option_field_name,
    tenantmail_fieldsets,
)
from tenantmail.fields import UndecryptableOptions
from tenantmail.masking import mask
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, HOOLI_PASSWORD, Tenants
from tests.tenants_app.models import Client

NEW_KEY = "key-acme-new-4444444444444444"


class ClientMailForm(TenantMailForm):
    class Meta:
        model = Client
        fields = ("name", "mail_backend", "mail_defaults")


def as_submitted(form: forms.BaseForm) -> dict[str, Any]:
    """What a browser posts back for an unchanged form: password inputs come back empty."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[name] = "on"
        elif isinstance(field.widget, forms.PasswordInput) or value is None:
            data[name] = ""
        else:
            data[name] = value
    return data


def post(tenant: Client, **changes: Any) -> ClientMailForm:
    data = {**as_submitted(ClientMailForm(instance=tenant)), **changes}
    return ClientMailForm(data=data, instance=tenant)


def saved(form: ClientMailForm) -> Client:
    assert form.is_valid(), form.errors
    form.save()
    return Client.objects.get(pk=form.instance.pk)


def field(option: str) -> str:
    return option_field_name(option)


def errors(form: forms.BaseForm, name: str) -> str:
    return " ".join(form.errors.get(name, []))


def test_every_option_has_a_field_and_every_backend_lists_known_options() -> None:
    assert {option_field_name(o) for o in OPTION_FIELDS} <= set(TenantMailForm.base_fields)
    for names in BACKEND_OPTION_FIELDS.values():
        assert set(names) <= set(OPTION_FIELDS)


def test_secrets_are_never_rendered_only_masked(tenants: Tenants) -> None:
    html = ClientMailForm(instance=tenants.acme).as_p()
    assert ACME_KEY not in html
    assert mask(ACME_KEY) in html
    assert 'type="password"' in html
    assert "mg.acme.example" in html  # harmless options are shown as they are


def test_unchanged_submission_keeps_everything(tenants: Tenants) -> None:
    before = dict(tenants.acme.mail_options)
    acme = saved(post(tenants.acme))
    assert dict(acme.mail_options) == before
    assert acme.mail_backend == "mailgun"


def test_blank_secret_keeps_it_while_other_options_change(tenants: Tenants) -> None:
    acme = saved(post(tenants.acme, **{field("sender_domain"): "mg2.acme.example"}))
    assert acme.mail_options["api_key"] == ACME_KEY
    assert acme.mail_options["sender_domain"] == "mg2.acme.example"


def test_new_key_is_saved_encrypted_and_used_by_the_next_send(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = saved(post(tenants.acme, **{field("api_key"): NEW_KEY}))
    assert acme.mail_options["api_key"] == NEW_KEY
    raw = Client.objects.filter(pk=acme.pk).values_list("mail_options", flat=True)
    assert NEW_KEY not in str(list(raw))  # the column holds ciphertext... (values() decrypts)
    from django.core.mail import EmailMessage

    mailer(tenant=acme).send_messages([EmailMessage("s", "b", to=["x@example.com"])])
    assert fake_esp.wait_for(1)[0].credential == NEW_KEY


def test_a_rejected_submission_does_not_echo_the_typed_secret(tenants: Tenants) -> None:
    form = post(
        tenants.acme,
        **{field("api_key"): NEW_KEY, "mail_defaults": '{"from_email": "a@b.c\\r\\nBcc: x"}'},
    )
    assert not form.is_valid()
    assert NEW_KEY not in form.as_p()


def test_backend_choices_are_the_allow_list_by_short_name(tenants: Tenants, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["mailgun", "smtp"]}
    choices = dict(ClientMailForm(instance=tenants.acme).fields["mail_backend"].choices)
    assert set(choices) == {"", "mailgun", "smtp"}
    form = post(tenants.acme, mail_backend="postmark")
    assert not form.is_valid()
    assert "mail_backend" in form.errors


def test_a_stored_backend_no_longer_allowed_is_shown_and_refused(
    tenants: Tenants, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["postmark"]}
    form = ClientMailForm(instance=tenants.acme)
    assert form["mail_backend"].value() == "mailgun"
    assert "not allowed" in dict(form.fields["mail_backend"].choices)["mailgun"]
    form = post(tenants.acme)
    assert not form.is_valid()
    assert "not allowed" in errors(form, "mail_backend")


def test_a_dotted_path_is_shown_by_its_short_name(tenants: Tenants) -> None:
    tenants.acme.mail_backend = "anymail.backends.mailgun.EmailBackend"
    tenants.acme.save()
    assert ClientMailForm(instance=tenants.acme)["mail_backend"].value() == "mailgun"
    assert saved(post(tenants.acme)).mail_backend == "mailgun"


def test_switching_backend_needs_the_new_backends_credential(tenants: Tenants) -> None:
    form = post(
        tenants.acme, mail_backend="postmark", **{field("sender_domain"): "", field("api_url"): ""}
    )
    assert not form.is_valid()
    assert "postmark needs server_token" in errors(form, field("server_token"))
    assert "platform's own credentials" in errors(form, field("server_token"))


def test_switching_backend_drops_the_old_secrets(tenants: Tenants) -> None:
    form = post(
        tenants.acme,
        mail_backend="postmark",
        **{
            field("sender_domain"): "",
            field("api_url"): "",
            field("server_token"): "pm-new-token-000000",
        },
    )
    acme = saved(form)
    assert dict(acme.mail_options) == {"server_token": "pm-new-token-000000"}


def test_an_option_the_backend_does_not_use_is_refused(tenants: Tenants) -> None:
    form = post(tenants.globex, **{field("sender_domain"): "mg.globex.example"})
    assert not form.is_valid()
    assert "postmark does not use this option" in errors(form, field("sender_domain"))


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ('{"from_email": "a@b.c\\nBcc: victim@example.com"}', "contains a line break"),
        ('{"form_email": "a@b.c"}', "unknown key 'form_email'"),
        ('{"tags": "not-a-list"}', "wrong type"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "Enter a valid JSON"),
    ],
)
def test_mail_defaults_errors_are_readable(tenants: Tenants, defaults: str, message: str) -> None:
    form = post(tenants.acme, mail_defaults=defaults)
    assert not form.is_valid()
    text = errors(form, "mail_defaults")
    assert message in text
    assert "tenant 'acme'" not in text  # the prefix is for logs; the form shows where it is


def test_blank_mail_defaults_is_an_empty_object(tenants: Tenants) -> None:
    assert saved(post(tenants.acme, mail_defaults="")).mail_defaults == {}


def test_platform_default_discards_the_stored_options(tenants: Tenants) -> None:
    acme = saved(post(tenants.acme, mail_backend=""))
    assert acme.mail_backend == ""
    assert dict(acme.mail_options) == {}


def test_platform_default_with_a_new_secret_is_refused(tenants: Tenants) -> None:
    form = post(tenants.initech, **{field("api_key"): NEW_KEY})
    assert not form.is_valid()
    assert "Choose the backend" in errors(form, "mail_backend")


def test_platform_default_when_missing_config_raises_is_refused(
    tenants: Tenants, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MISSING_CONFIG": "raise"}
    form = post(tenants.initech)
    assert not form.is_valid()
    assert "no mail backend configured" in errors(form, "mail_backend")


def test_smtp_options_are_typed_and_the_password_kept(
    tenants: Tenants, fake_smtp: FakeSMTP
) -> None:
    html = ClientMailForm(instance=tenants.hooli).as_p()
    assert HOOLI_PASSWORD not in html
    hooli = saved(post(tenants.hooli, **{field("use_tls"): "", field("timeout"): "7"}))
    assert hooli.mail_options["password"] == HOOLI_PASSWORD
    assert hooli.mail_options["port"] == fake_smtp.port
    assert hooli.mail_options["timeout"] == 7
    assert "use_tls" not in hooli.mail_options
    hooli = saved(post(hooli, **{field("use_tls"): "on"}))
    assert hooli.mail_options["use_tls"] is True


def test_other_options_are_hidden_kept_replaced_and_cleared(tenants: Tenants) -> None:
    acme = saved(post(tenants.acme, mail_options_other='{"requests_timeout": 9}'))
    assert acme.mail_options["requests_timeout"] == 9
    form = ClientMailForm(instance=acme)
    assert form["mail_options_other"].value() == ""
    assert '"requests_timeout": 9' in form.fields["mail_options_other"].help_text
    acme = saved(post(acme))  # blank keeps
    assert acme.mail_options["requests_timeout"] == 9
    acme = saved(post(acme, mail_options_other="{}"))
    assert "requests_timeout" not in acme.mail_options
    assert acme.mail_options["api_key"] == ACME_KEY


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ("{oops", "Enter valid JSON"),
        ('["a"]', "Enter a JSON object"),
        ('{"api_key": "key-sneaky-000000000000"}', "Set api_key with its own field"),
        ('{"alias": "x"}', "alias"),
    ],
)
def test_other_options_errors(tenants: Tenants, other: str, message: str) -> None:
    form = post(tenants.acme, mail_options_other=other)
    assert not form.is_valid()
    assert message in errors(form, "mail_options_other")


def test_forget_drops_the_stored_secrets(tenants: Tenants) -> None:
    form = post(tenants.acme, mail_options_forget="on")
    assert not form.is_valid()
    assert field("api_key") in form.errors
    acme = saved(post(tenants.acme, mail_options_forget="on", **{field("api_key"): NEW_KEY}))
    assert acme.mail_options["api_key"] == NEW_KEY


def test_undecryptable_options_are_kept_until_reentered(tenants: Tenants) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            # The table name is the model's, not input; the values are parameters.
            f"UPDATE {Client._meta.db_table} SET mail_options = %s WHERE id = %s",  # noqa: S608
            ["gAAAAA-not-a-real-token", tenants.acme.pk],
        )
    acme = Client.objects.get(pk=tenants.acme.pk)
    assert isinstance(acme.mail_options, UndecryptableOptions)
    form = ClientMailForm(instance=acme)
    assert "cannot be decrypted" in form.fields["mail_options_other"].help_text
    acme = saved(post(acme, name="Acme Corp"))
    assert acme.name == "Acme Corp"
    assert isinstance(acme.mail_options, UndecryptableOptions)
    acme = saved(post(acme, **{field("api_key"): NEW_KEY, field("sender_domain"): "mg.a.example"}))
    assert dict(acme.mail_options) == {"api_key": NEW_KEY, "sender_domain": "mg.a.example"}


def test_a_custom_backend_accepts_every_field(tenants: Tenants, settings: Any) -> None:
    custom = "django.core.mail.backends.locmem.EmailBackend"
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": ["mailgun", custom]}
    form = post(tenants.acme, mail_backend=custom)
    acme = saved(form)
    assert acme.mail_backend == custom
    # The secrets were mailgun's; the harmless options (still in their inputs) carry over.
    assert set(acme.mail_options) == {"sender_domain", "api_url"}


def test_a_new_tenant_needs_no_instance_values() -> None:
    form = ClientMailForm()
    assert form["mail_backend"].value() == ""
    assert "Not set." in form.fields[field("api_key")].help_text


class ClientAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    fields = ("name", "schema_name", "mail_options")


def test_admin_mixin_replaces_the_raw_fields_with_the_mail_sections(tenants: Tenants) -> None:
    model_admin = ClientAdmin(Client, admin.AdminSite())
    request = RequestFactory().get("/")
    fieldsets = model_admin.get_fieldsets(request, tenants.hooli)
    assert fieldsets[0] == (None, {"fields": ["name", "schema_name"]})
    flat = [f for _title, opts in fieldsets for f in opts["fields"]]
    assert "mail_options" not in flat
    assert field("api_key") in flat
    form_class = model_admin.get_form(request, tenants.hooli)
    assert issubclass(form_class, TenantMailForm)
    assert HOOLI_PASSWORD not in form_class(instance=tenants.hooli).as_p()


def test_sections_the_backend_does_not_use_are_collapsed() -> None:
    def collapsed(backend: str | None) -> set[str]:
        return {
            str(title)
            for title, opts in tenantmail_fieldsets(backend)
            if "collapse" in opts.get("classes", ())
        }

    assert collapsed(None) == {"Other options"}
    assert collapsed("smtp") == {"ESP credentials", "Other options"}
    assert collapsed("mailgun") == {"SMTP server", "Other options"}
    assert collapsed("") == {"ESP credentials", "SMTP server", "Other options"}
    assert collapsed("custom.Backend") == {"Other options"}


def test_json_field_help_lists_stored_other_options_masked(tenants: Tenants) -> None:
    acme = saved(post(tenants.acme, mail_options_other=json.dumps({"webhook_secret": "s" * 20})))
    help_text = ClientMailForm(instance=acme).fields["mail_options_other"].help_text
    assert "s" * 20 not in help_text
    assert mask("s" * 20) in help_text
    assert GLOBEX_TOKEN not in help_text


def test_a_broken_platform_default_does_not_block_editing_a_tenant(
    tenants: Tenants, settings: Any
) -> None:
    # Reported by the system checks (tenantmail.E003); not this tenant's form's business.
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {"BACKEND": "tenantmail.backends.TenantBackend"},
    }
    assert saved(post(tenants.initech, name="Initech Inc")).name == "Initech Inc"


class PartialForm(TenantMailForm):
    """A subclass may drop fields (Django's ``name = None``); the rest keeps working."""

    mail_backend = None  # type: ignore[assignment]
    mail_options_other = None  # type: ignore[assignment]
    mail_option_api_key = None  # type: ignore[assignment]

    class Meta:
        model = Client
        fields = ("name",)


def test_a_form_without_some_fields_still_works(tenants: Tenants) -> None:
    form = PartialForm(instance=tenants.acme)
    assert ACME_KEY not in form.as_p()
    acme = saved(PartialForm(data={**as_submitted(form), "name": "Acme 2"}, instance=tenants.acme))
    assert acme.name == "Acme 2"
    assert acme.mail_options["api_key"] == ACME_KEY


class MailOnlyAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    fields = ("mail_backend", "mail_options")


def test_admin_mixin_drops_sections_left_empty(tenants: Tenants) -> None:
    model_admin = MailOnlyAdmin(Client, admin.AdminSite())
    fieldsets = model_admin.get_fieldsets(RequestFactory().get("/"), None)
    assert str(fieldsets[0][0]) == "Mail account"


# -- error reports, and the form fitting the backend ------------------------------------------

ADMIN_CANARY = "key-typed-into-admin-canary-31337"


class FailingSaveAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """An admin whose save fails after validation (a DB outage, a bug in a signal handler...)."""

    fields = ("name",)

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        raise RuntimeError("the database went away")


def _admin_post_with_canary(model_admin: Any, tenant: Client) -> Any:
    """A change-form POST that types ADMIN_CANARY (built here: the test's own frame, which the
    report also shows, must not hold the canary)."""
    from django.contrib.auth.models import User

    form_class = model_admin.get_form(RequestFactory().get("/"), tenant)
    data = {**as_submitted(form_class(instance=tenant)), field("api_key"): ADMIN_CANARY}
    data["mail_options_other"] = json.dumps({"webhook_secret": ADMIN_CANARY})
    data["mail_webhook_secrets"] = json.dumps({"mailgun": {"webhook_signing_key": ADMIN_CANARY}})
    request = RequestFactory().post(f"/admin/tenants_app/client/{tenant.pk}/change/", data)
    request.user = User(username="op", is_active=True, is_staff=True, is_superuser=True)
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    return request


def test_an_error_while_saving_does_not_put_the_typed_key_in_the_error_report(
    tenants: Tenants, settings: Any
) -> None:
    from django.views.debug import ExceptionReporter

    settings.DEBUG = False  # the report mailed to ADMINS / sent to an error tracker
    model_admin = FailingSaveAdmin(Client, admin.AdminSite())
    request = _admin_post_with_canary(model_admin, tenants.acme)
    with pytest.raises(RuntimeError) as caught:
        model_admin.changeform_view(request, str(tenants.acme.pk))
    reporter = ExceptionReporter(request, RuntimeError, caught.value, caught.tb)
    text, html = reporter.get_traceback_text(), reporter.get_traceback_html()
    assert "the database went away" in text
    assert field("api_key") in text  # the parameter is listed, its value is not
    for report in (text, html):
        assert ADMIN_CANARY not in report


def test_the_backend_select_tells_the_script_which_inputs_each_choice_uses(
    tenants: Tenants, settings: Any
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "postmark", "smtp", "tests.CustomBackend"],
    }
    form = ClientMailForm(instance=tenants.acme)
    uses = json.loads(form.fields["mail_backend"].widget.attrs["data-tenantmail-fields"])
    assert uses[""] == []
    assert uses["mailgun"] == [field(o) for o in ("api_key", "sender_domain", "api_url")]
    assert uses["postmark"] == [field("server_token"), field("api_url")]
    assert field("password") in uses["smtp"]
    assert uses["tests.CustomBackend"] == [field(o) for o in OPTION_FIELDS]
    assert "tenantmail/admin-backend-fields.js" in str(form.media)
    assert 'data-tenantmail-fields="' in str(form["mail_backend"])


def test_the_script_is_a_static_file_of_the_app() -> None:
    from django.contrib.staticfiles import finders

    path = finders.find("tenantmail/admin-backend-fields.js")
    assert path is not None
    script = open(path, encoding="utf-8").read()  # noqa: SIM115
    assert "data-tenantmail-fields" in script


def test_a_new_tenants_message_defaults_start_as_an_empty_object() -> None:
    # Observed: the textarea started as "null".
    form = ClientMailForm()
    assert form["mail_defaults"].value() == "{}"
    assert ">\n{}</textarea>" in str(form["mail_defaults"])


def test_a_rerendered_form_opens_the_sections_of_the_backend_just_chosen(
    tenants: Tenants,
) -> None:
    # Observed: choosing "mailgun" for a tenant on the platform account left its section shut.
    model_admin = ClientAdmin(Client, admin.AdminSite())
    request = RequestFactory().post("/", {"mail_backend": "mailgun"})
    collapsed = {
        str(title)
        for title, opts in model_admin.get_fieldsets(request, tenants.initech)
        if "collapse" in opts.get("classes", ())
    }
    assert "ESP credentials" not in collapsed
    assert "SMTP server" in collapsed
