"""The sub-account identifier is the operator's: editable by superusers only, never a secret."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib import admin
from django.test import RequestFactory

from tenantmail.admin import TenantMailAdminMixin, TenantMailForm
from tests.conftest import Tenants
from tests.tenants_app.models import Client
from tests.test_admin import as_submitted
from tests.test_subaccounts import PARENT_KEY, as_subaccount, subaccounts

pytestmark = pytest.mark.django_db
__all__ = ["subaccounts"]  # the fixture, re-used


class TenantFacingForm(TenantMailForm):
    """A tenant's own settings page that (carelessly) lists the identifier."""

    class Meta:
        model = Client
        fields = ("name", "mail_backend", "mail_subaccount", "mail_defaults")


class ClientAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    fields = ("name",)


def admin_form(tenant: Client, *, superuser: bool, **changes: Any) -> Any:
    request = RequestFactory().post("/")
    request.user = SimpleNamespace(is_superuser=superuser, is_staff=True)  # type: ignore[assignment]
    form_class = ClientAdmin(Client, admin.AdminSite()).get_form(request, tenant)
    data = {**as_submitted(form_class(instance=tenant)), **changes}
    return form_class(data=data, instance=tenant)


def test_a_tenant_facing_form_cannot_set_the_identifier(
    tenants: Tenants, subaccounts: object
) -> None:
    initech = as_subaccount(tenants.initech, "mailgun_subaccount", "sa-initech")
    form = TenantFacingForm(instance=initech)
    assert form.fields["mail_subaccount"].disabled
    data = {**as_submitted(form), "mail_subaccount": "sa-globex"}
    form = TenantFacingForm(data=data, instance=initech)
    assert form.is_valid(), form.errors
    form.save()
    assert Client.objects.get(pk=initech.pk).mail_subaccount == "sa-initech"


def test_only_a_superuser_sets_it_in_the_admin(tenants: Tenants, subaccounts: object) -> None:
    staff = admin_form(tenants.initech, superuser=False, mail_subaccount="sa-x")
    assert staff.fields["mail_subaccount"].disabled
    assert staff.is_valid(), staff.errors
    staff.save()
    assert Client.objects.get(pk=tenants.initech.pk).mail_subaccount == ""

    operator = admin_form(
        tenants.initech,
        superuser=True,
        mail_backend="mailgun_subaccount",
        mail_subaccount="sa-initech",
    )
    assert not operator.fields["mail_subaccount"].disabled
    assert operator.is_valid(), operator.errors
    operator.save()
    saved = Client.objects.get(pk=tenants.initech.pk)
    assert (saved.mail_backend, saved.mail_subaccount, saved.mail_options) == (
        "mailgun_subaccount",
        "sa-initech",
        {},
    )
    html = admin_form(saved, superuser=True).as_p()
    assert "sa-initech" in html
    assert PARENT_KEY not in html
    assert PARENT_KEY[-4:] not in html


def test_the_admin_refuses_sub_account_mode_without_an_identifier(
    tenants: Tenants, subaccounts: object
) -> None:
    form = admin_form(tenants.initech, superuser=True, mail_backend="mailgun_subaccount")
    assert not form.is_valid()
    assert "operator sets it" in " ".join(form.errors["mail_subaccount"])


def test_the_admin_reports_a_missing_parent_credential(tenants: Tenants) -> None:
    form = admin_form(
        tenants.initech,
        superuser=True,
        mail_backend="sparkpost_subaccount",
        mail_subaccount="4207",
    )
    assert not form.is_valid()
    assert 'TENANTMAIL["SUBACCOUNTS"]["sparkpost"]' in " ".join(form.errors["mail_backend"])


def test_sub_account_backends_take_no_option_in_the_form(
    tenants: Tenants, subaccounts: object
) -> None:
    form = admin_form(
        tenants.initech,
        superuser=True,
        mail_backend="mailgun_subaccount",
        mail_subaccount="sa-initech",
        mail_option_api_key="key-typed-by-mistake-000000",
    )
    assert not form.is_valid()
    assert "does not use this option" in " ".join(form.errors["mail_option_api_key"])
