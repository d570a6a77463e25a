"""The admin action "Verify mail settings" and the verification status, through Django's test client
against a real admin site (the test settings have no admin, so this module adds one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client as HttpClient
from django.test import override_settings
from django.urls import path

from tenantmail.admin import TenantMailAdminMixin
from tenantmail.masking import mask
from tenantmail.testing import FakeESP
from tenantmail.testing_accounts import AccountState
from tests.conftest import ACME_KEY, Tenants
from tests.tenants_app.models import Client
from tests.test_verification import account

pytestmark = pytest.mark.django_db
__all__ = ["account"]  # the fixture, re-used

site = admin.AdminSite(name="verification_admin")


@admin.register(Client, site=site)
class ClientAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    fields = ("name",)
    list_display = ("name", "schema_name")


urlpatterns = [path("admin/", site.urls)]

CHANGELIST = "/admin/tenants_app/client/"
STAFF = "ops@saas.example"


@pytest.fixture
def admin_site(settings: Any) -> Iterator[None]:
    from django.conf import settings as django_settings

    apps = [*django_settings.INSTALLED_APPS, "django.contrib.admin", "django.contrib.messages"]
    with override_settings(
        INSTALLED_APPS=apps,
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        MESSAGE_STORAGE="django.contrib.messages.storage.cookie.CookieStorage",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
    ):
        yield


def operator(email: str = STAFF, *, superuser: bool = True) -> HttpClient:
    user = User.objects.create_user(
        "ops", email=email, password="ops-pass-1234", is_staff=True, is_superuser=superuser
    )
    if not superuser:
        user.user_permissions.add(Permission.objects.get(codename="view_client"))
    client = HttpClient()
    client.force_login(user)
    return client


def run_action(client: HttpClient, *tenants: Client) -> Any:
    return client.post(
        CHANGELIST,
        {
            "action": "verify_mail_settings",
            "_selected_action": [t.pk for t in tenants],
            "index": 0,
        },
        follow=True,
    )


def shown(response: Any) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def test_the_admin_action_sends_only_to_the_staff_members_own_address(
    admin_site: None, tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    account.refused_keys.add(ACME_KEY)
    response = run_action(operator(), tenants.acme, tenants.globex)
    assert response.status_code == 200
    messages = sorted(shown(response), key=lambda m: m[1])  # acme's first
    assert [level for level, _text in messages] == ["error", "success"]
    assert messages[0][1].startswith(
        f"acme: authentication failed at Mailgun (401) with key{mask(ACME_KEY)}"
    )
    assert messages[1][1].startswith("globex: ok [")
    assert ACME_KEY not in response.content.decode()
    [sent] = fake_esp.messages  # acme failed before its test message; globex sent one
    assert (sent.esp, sent.to) == ("postmark", [STAFF])
    # The list shows the stored result.
    page = response.content.decode()
    assert "mail verification" in page.lower()
    assert "failed at authenticate" in page


def test_a_staff_user_without_an_email_is_told_and_nothing_is_verified(
    admin_site: None, tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    response = run_action(operator(email=""), tenants.acme)
    [(level, text)] = shown(response)
    assert level == "error"
    assert text.startswith("Your staff account has no email address")
    assert fake_esp.messages == []
    assert fake_esp.rejected == []
    assert Client.objects.get(pk=tenants.acme.pk).mail_verified_at is None


def test_the_admin_action_is_throttled(
    admin_site: None, tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    client = operator()
    assert shown(run_action(client, tenants.globex))[0][0] == "success"
    [(level, text)] = shown(run_action(client, tenants.globex))
    assert level == "error"
    assert text.startswith("tenant 'globex': verified 0 s ago;")
    assert len(fake_esp.messages) == 1


def test_the_action_needs_the_change_permission(
    admin_site: None, tenants: Tenants, fake_esp: FakeESP, account: AccountState
) -> None:
    client = operator(superuser=False)  # may view tenants, not change them
    page = client.get(CHANGELIST).content.decode()
    assert "verify_mail_settings" not in page
    response = run_action(client, tenants.acme)
    assert fake_esp.messages == []
    assert fake_esp.rejected == []
    assert Client.objects.get(pk=tenants.acme.pk).mail_verified_at is None
    assert response.status_code == 200


def test_the_change_page_shows_the_last_verification(
    admin_site: None, tenants: Tenants, account: AccountState
) -> None:
    client = operator()
    before = client.get(f"{CHANGELIST}{tenants.acme.pk}/change/").content.decode()
    assert "Last verification: never verified" in before
    run_action(client, tenants.acme)
    after = client.get(f"{CHANGELIST}{tenants.acme.pk}/change/").content.decode()
    assert "Last verification: ok, " in after
