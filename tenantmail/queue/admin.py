"""The operators' view of the outbox: list, filter, search; retry failed rows. Read-only content.

Registered on ``admin.site`` (when ``django.contrib.admin`` is installed) by importing
``tenantmail.admin``, which Django's admin autodiscovery does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import apps
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from ..models import OutboxMessage

if TYPE_CHECKING:
    _Base = admin.ModelAdmin[OutboxMessage]
else:  # ModelAdmin is only subscriptable at runtime under django-stubs-ext's monkeypatch
    _Base = admin.ModelAdmin


class OutboxMessageAdmin(_Base):
    list_display = (
        "id",
        "tenant_label",
        "subject",
        "status",
        "attempts",
        "created_at",
        "sent_at",
        "delivery_status",
        "esp_message_id",
    )
    list_filter = ("status", "delivery_status", "tenant_schema")
    search_fields = ("tenant_schema", "subject", "message_id", "esp_message_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = ("retry_now",)
    # The stored message (payload) is shown nowhere: it may carry personal data, and an
    # operator needs the outcome, not the body.
    exclude = ("payload", "options", "claim_token")
    readonly_fields = tuple(
        f.name
        for f in OutboxMessage._meta.fields
        if f.name not in ("payload", "options", "claim_token")
    )

    @admin.display(description="tenant", ordering="tenant_schema")
    def tenant_label(self, obj: OutboxMessage) -> str:
        return obj.tenant_schema or "(platform)"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry the selected failed messages now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        now = timezone.now()
        rows = list(queryset.filter(status=OutboxMessage.Status.FAILED))
        for row in rows:
            row.status = OutboxMessage.Status.QUEUED
            row.attempts = 0
            row.next_attempt_at = now
            row.enqueued_at = now
            row.save(update_fields=["status", "attempts", "next_attempt_at", "enqueued_at"])
        if rows:
            from .slots import kick

            transaction.on_commit(kick, using=queryset.db)
        self.message_user(
            request, f"{len(rows)} message(s) queued again.", messages.SUCCESS, fail_silently=True
        )


if apps.is_installed("django.contrib.admin"):
    admin.site.register(OutboxMessage, OutboxMessageAdmin)
