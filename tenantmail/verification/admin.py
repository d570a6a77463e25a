"""The admin side of verification: the "Verify mail settings" action and the status shown in the
tenant list and on its change page (wired in by :class:`~tenantmail.admin.TenantMailAdminMixin`)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from .report import VerificationError
from .run import verify


def verify_selected(request: HttpRequest, tenants: Any) -> None:
    """Verify each selected tenant; the test message goes to the staff member's own address."""
    user: Any = request.user
    field = user.get_email_field_name() if hasattr(user, "get_email_field_name") else "email"
    address = str(getattr(user, field, "") or "")
    if not address:
        messages.error(
            request,
            _(
                "Your staff account has no email address, so the test message has nowhere to go: "
                "add one to your user and try again. Nothing was verified."
            ),
        )
        return
    for tenant in tenants:
        try:
            report = verify(tenant, send_to=address)
        except VerificationError as error:
            messages.error(request, str(error))
            continue
        (messages.success if report.ok else messages.error)(request, report.line())


def status_text(tenant: Any) -> str:
    """``"ok, 2026-12-02 08:41"``, ``"failed at authenticate, ...: <reason>"`` or
    ``"never verified"``."""
    when = getattr(tenant, "mail_verified_at", None)
    stored = getattr(tenant, "mail_verification", None) or {}
    if when is None or not isinstance(stored, dict) or "ok" not in stored:
        return str(_("never verified"))
    shown = timezone.localtime(when).strftime("%Y-%m-%d %H:%M")
    if stored.get("ok"):
        return f"ok, {shown}"
    return f"failed at {stored.get('stage')}, {shown}: {stored.get('reason', '')}"


def status_html(tenant: Any) -> SafeString:
    """The change page's line (fieldset descriptions are rendered unescaped: escape here)."""
    return format_html("{}: {}", _("Last verification"), status_text(tenant))
