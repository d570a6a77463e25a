"""The platform operator's admin (public schema): tenants, their domains and mail settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django_tenants.utils import get_public_schema_name

from example_site.customers.models import Client, Domain
from tenantmail.admin import TenantMailAdminMixin
from tenantmail.masking import mask
from tenantmail.models import Suppression
from tenantmail.webhooks.admin import SuppressionAdmin

admin.site.register(Suppression, SuppressionAdmin)


class DomainInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Domain

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 1 if obj is None else 0  # a new tenant needs its <schema>.localhost


@admin.register(Client)
class ClientAdmin(TenantMailAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "schema_name", "mail_account", "from_email")
    fields = ("name", "schema_name")
    inlines = (DomainInline,)
    search_fields = ("name", "schema_name")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Client]:
        # The public "tenant" is the platform itself: its mail is platform mail.
        return super().get_queryset(request).exclude(schema_name=get_public_schema_name())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["schema_name"] if obj is not None else []

    @admin.display(description="mail account")
    def mail_account(self, obj: Client) -> str:
        if not obj.mail_backend:
            return "platform default"
        if obj.mail_subaccount and obj.mail_backend == "mailgun_subaccount":
            parent = settings.TENANTMAIL.get("SUBACCOUNTS", {}).get("mailgun", {}).get("api_key")
            shown = mask(parent) if parent else "parent key not set"
            return f"{obj.mail_backend} · {shown} on behalf of {obj.mail_subaccount}"
        options = obj.mail_options if isinstance(obj.mail_options, dict) else {}
        names = ("api_key", "server_token", "api_token", "password")
        secret = next((options[k] for k in names if k in options), None)
        return f"{obj.mail_backend} · {mask(secret)}" if secret else obj.mail_backend

    @admin.display(description="from")
    def from_email(self, obj: Client) -> str:
        defaults = obj.mail_defaults if isinstance(obj.mail_defaults, dict) else {}
        return str(defaults.get("from_email", ""))
