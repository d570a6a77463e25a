"""Suppression: events from a tenant's URL fill *that tenant's* list; the next send honours it.

Sends go through TenantBackend to the loopback fake ESP, so "dropped" means the ESP really did
not receive the address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import Client as HttpClient

from tenantmail import mailer, signals, suppression
from tenantmail.backends import TenantBackend
from tenantmail.models import Suppression
from tenantmail.suppression import SuppressedRecipientError
from tenantmail.testing import FakeESP
from tenantmail.webhooks import tracking_url
from tenantmail.webhooks.admin import SuppressionAdmin, describe_webhook_secrets
from tenantmail.webhooks.testing import brevo_post, mailgun_post, postmark_post
from tests.conftest import Tenants

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

ACME_SIGNING = "acme-signing-key-for-suppression"
GLOBEX_BASIC = "globex:suppression-basic"


@pytest.fixture
def hooked(tenants: Tenants) -> Tenants:
    tenants.acme.mail_webhook_secrets = {
        "mailgun": {"webhook_signing_key": ACME_SIGNING},
        "brevo": {"webhook_secret": "acme:brevo"},
    }
    tenants.acme.save()
    tenants.globex.mail_webhook_secrets = {"postmark": {"webhook_secret": GLOBEX_BASIC}}
    tenants.globex.save()
    return tenants


def post(url: str, payload: tuple[bytes, str, dict[str, str]]) -> int:
    body, content_type, headers = payload
    response = HttpClient().post(
        url, data=body, content_type=content_type, HTTP_HOST="localhost", **headers
    )
    return int(response.status_code)


def bounce_for_acme(address: str = "gone@example.com") -> None:
    payload = mailgun_post(
        ACME_SIGNING, event="failed", recipient=address, metadata={"tenant": "acme"}
    )
    assert post(tracking_url("acme", "mailgun"), payload) == 200


def entries() -> list[tuple[str, str, str]]:
    return list(Suppression.objects.values_list("tenant_schema", "address", "reason"))


def test_hard_bounce_complaint_unsubscribe_suppress_for_that_tenant_only(hooked: Tenants) -> None:
    bounce_for_acme("Gone@Example.com")
    bounce_for_acme("Gone@Example.com")  # replay / second bounce: still one entry
    assert (
        post(
            tracking_url("acme", "mailgun"),
            mailgun_post(ACME_SIGNING, event="complained", recipient="angry@example.com"),
        )
        == 200
    )
    assert (
        post(
            tracking_url("acme", "mailgun"),
            mailgun_post(ACME_SIGNING, event="unsubscribed", recipient="bye@example.com"),
        )
        == 200
    )
    assert (
        post(
            tracking_url("globex", "postmark"),
            postmark_post(GLOBEX_BASIC, record="Bounce", recipient="gone-too@example.com"),
        )
        == 200
    )
    assert entries() == [
        ("acme", "angry@example.com", "complained"),
        ("acme", "bye@example.com", "unsubscribed"),
        ("acme", "gone@example.com", "bounced"),
        ("globex", "gone-too@example.com", "bounced"),
    ]


def test_deliveries_and_soft_bounces_do_not_suppress(hooked: Tenants) -> None:
    url = tracking_url("acme", "mailgun")
    assert post(url, mailgun_post(ACME_SIGNING, event="delivered")) == 200
    soft = mailgun_post(ACME_SIGNING, event="failed", severity="temporary", recipient="x@x.com")
    assert post(url, soft) == 200
    brevo_soft = brevo_post("acme:brevo", event="soft_bounce", recipient="full@example.com")
    assert post(tracking_url("acme", "brevo"), brevo_soft) == 200
    brevo_hard = brevo_post("acme:brevo", event="hard_bounce", recipient="dead@example.com")
    assert post(tracking_url("acme", "brevo"), brevo_hard) == 200
    assert entries() == [("acme", "dead@example.com", "bounced")]


@pytest.fixture
def mode(settings: Any) -> Any:
    def set_mode(value: str) -> None:
        settings.TENANTMAIL = {**settings.TENANTMAIL, "SUPPRESSION": value}

    return set_mode


@pytest.fixture
def suppressed_signals() -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        got.append({"sender": sender, **kwargs})

    signals.suppressed.connect(receiver, dispatch_uid="test-suppressed")
    yield got
    signals.suppressed.disconnect(dispatch_uid="test-suppressed")


def test_drop_mode_removes_suppressed_recipients_on_the_next_send(
    hooked: Tenants, fake_esp: FakeESP, mode: Any, suppressed_signals: list[dict[str, Any]]
) -> None:
    bounce_for_acme()
    mode("drop")
    mixed = EmailMessage("s", "b", to=["Gone <GONE@example.com>", "ok@example.com"])
    only_gone = EmailMessage("s", "b", to=["gone@example.com"], cc=["gone@example.com"])
    assert mailer(tenant="acme").send_messages([mixed, only_gone]) == 1
    received = fake_esp.wait_for(1)
    assert [m.to for m in received] == [["ok@example.com"]]
    assert mixed.tenantmail_suppressed == ["Gone <GONE@example.com>"]  # type: ignore[attr-defined]
    assert [(s["tenant"], s["recipients"]) for s in suppressed_signals] == [
        ("acme", ["Gone <GONE@example.com>"]),
        ("acme", ["gone@example.com", "gone@example.com"]),
    ]
    assert suppressed_signals[0]["sender"] is TenantBackend

    # Other tenants are unaffected by acme's list.
    fake_esp.clear()
    assert mailer(tenant="globex").send_messages([EmailMessage("s", "b", to=["gone@example.com"])])
    assert [m.to for m in fake_esp.wait_for(1)] == [["gone@example.com"]]

    # Removing the entry lets acme send again.
    assert suppression.unsuppress("acme", "GONE@example.com")
    assert not suppression.unsuppress("acme", "gone@example.com")
    fake_esp.clear()
    assert mailer(tenant="acme").send_messages([EmailMessage("s", "b", to=["gone@example.com"])])
    assert [m.to for m in fake_esp.wait_for(1)] == [["gone@example.com"]]


def test_raise_mode_refuses_the_batch(hooked: Tenants, fake_esp: FakeESP, mode: Any) -> None:
    bounce_for_acme()
    mode("raise")
    message = EmailMessage("s", "b", to=["ok@example.com"], bcc=["gone@example.com"])
    with pytest.raises(SuppressedRecipientError) as excinfo:
        mailer(tenant="acme").send_messages([message])
    assert "tenant 'acme'" in str(excinfo.value)
    assert "gone@example.com" in str(excinfo.value)
    assert 'TENANTMAIL["SUPPRESSION"]' in str(excinfo.value)
    assert fake_esp.messages == []
    # Unsuppressed batches pass.
    assert mailer(tenant="acme").send_messages([EmailMessage("s", "b", to=["ok@example.com"])])


def test_off_by_default_records_but_sends(
    hooked: Tenants, fake_esp: FakeESP, django_assert_num_queries: Any
) -> None:
    bounce_for_acme()
    message = EmailMessage("s", "b", to=["gone@example.com"])
    assert mailer(tenant="acme").send_messages([message]) == 1
    assert [m.to for m in fake_esp.wait_for(1)] == [["gone@example.com"]]
    config = mailer(tenant="acme").resolve()
    with django_assert_num_queries(0):
        assert suppression.enforce(config, [message]) == [message]


def test_off_is_a_pass_through(hooked: Tenants, mode: Any, django_assert_num_queries: Any) -> None:
    """Off (the default), the send path's hook reads nothing and hands the batch back as is:
    no query, not even for a tenant with suppressed addresses, and no copy of the list. (Its
    cost per send is part of `make bench` row 6; tests assert behaviour, not timings.)"""
    assert suppression.suppress("acme", "gone@example.com")
    mode("off")
    config = mailer(tenant="acme").resolve()
    messages = [EmailMessage("s", "b", to=["gone@example.com"])]
    with django_assert_num_queries(0):
        assert suppression.enforce(config, messages) is messages
    assert messages[0].to == ["gone@example.com"]


def test_platform_mail_uses_the_public_list(hooked: Tenants, fake_esp: FakeESP, mode: Any) -> None:
    mode("drop")
    assert suppression.suppress(None, "Nope@Example.com")
    assert not suppression.suppress(None, "nope@example.com")
    assert mailer().send_messages([EmailMessage("s", "b", to=["nope@example.com"])]) == 0
    assert mailer(tenant="acme").send_messages([EmailMessage("s", "b", to=["nope@example.com"])])
    assert [m.to for m in fake_esp.wait_for(1)] == [["nope@example.com"]]
    assert entries() == [("public", "nope@example.com", "manual")]


def test_admin_pieces(hooked: Tenants) -> None:
    from django import forms
    from django.contrib import admin

    from tests.tenants_app.models import Client

    model_admin = SuppressionAdmin(Suppression, admin.AdminSite())
    assert "address" in model_admin.list_display
    bounce_for_acme()
    assert str(Suppression.objects.get()) == "gone@example.com (acme: bounced)"

    class Form(forms.ModelForm):  # type: ignore[type-arg]
        class Meta:
            model = Client
            fields = ("mail_webhook_secrets",)

    acme = Client.objects.get(pk=hooked.acme.pk)
    form = Form(instance=acme)
    describe_webhook_secrets(form, acme)
    help_text = str(form.fields["mail_webhook_secrets"].help_text)
    assert "acm…-key" not in help_text
    assert ACME_SIGNING not in help_text
    assert "…" in help_text
    assert ACME_SIGNING not in form.as_p()
    describe_webhook_secrets(form, Client.objects.get(pk=hooked.initech.pk))
    assert "Nothing stored" in str(form.fields["mail_webhook_secrets"].help_text)


def test_admin_form_keeps_webhook_secrets_on_blank_and_never_renders_them(
    hooked: Tenants,
) -> None:
    """Regression: ModelAdmin's textarea widget rendered the secrets and saved blank as NULL."""
    from django.contrib import admin
    from django.test import RequestFactory

    from tenantmail.admin import TenantMailAdminMixin
    from tests.tenants_app.models import Client

    class ClientAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
        fields = ("name",)

    acme = Client.objects.get(pk=hooked.acme.pk)
    model_admin = ClientAdmin(Client, admin.AdminSite())
    form_class = model_admin.get_form(RequestFactory().get("/"), acme)
    assert ACME_SIGNING not in form_class(instance=acme).as_p()
    # What the admin page posts back: the public options as rendered, secrets left blank.
    data = {
        "name": "Acme",
        "mail_backend": "mailgun",
        "mail_option_api_url": acme.mail_options["api_url"],
        "mail_option_sender_domain": acme.mail_options["sender_domain"],
        "mail_webhook_secrets": "",
    }
    form = form_class(data=data, instance=acme)
    assert form.is_valid(), form.errors
    form.save()
    stored = Client.objects.get(pk=acme.pk).mail_webhook_secrets
    assert stored["mailgun"] == {"webhook_signing_key": ACME_SIGNING}
    data["mail_webhook_secrets"] = '{"mailgun": {"webhook_signing_key": "new-one"}}'
    form = form_class(data=data, instance=Client.objects.get(pk=acme.pk))
    assert form.is_valid(), form.errors
    form.save()
    assert Client.objects.get(pk=acme.pk).mail_webhook_secrets == {
        "mailgun": {"webhook_signing_key": "new-one"}
    }
