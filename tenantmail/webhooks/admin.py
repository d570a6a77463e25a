"""Admin pieces for webhooks: the suppression list, and the masked webhook-secrets help text.

``SuppressionAdmin`` is not registered automatically (like ``tenantmail.admin``, this package
registers nothing); register it on the platform's admin site::

    from django.contrib import admin
    from tenantmail.models import Suppression
    from tenantmail.webhooks.admin import SuppressionAdmin

    admin.site.register(Suppression, SuppressionAdmin)

Deleting an entry (one, or "Delete selected") lets the tenant send to the address again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from ..fields import SecretJSONFormField, UndecryptableOptions
from ..masking import masked

if TYPE_CHECKING:
    from ..models import Suppression

    _SuppressionAdminBase = admin.ModelAdmin[Suppression]
else:
    _SuppressionAdminBase = admin.ModelAdmin


class SuppressionAdmin(_SuppressionAdminBase):
    list_display = ("address", "tenant_schema", "reason", "esp_name", "created_at")
    list_filter = ("reason", "tenant_schema", "esp_name")
    search_fields = ("address", "tenant_schema")
    readonly_fields = ("esp_name", "event_id", "created_at")
    ordering = ("tenant_schema", "address")


def describe_webhook_secrets(form: forms.BaseForm, instance: Any) -> None:
    """Make ``mail_webhook_secrets`` a never-rendered secret input; show what is stored, masked.

    The field is rebuilt here because ModelAdmin swaps a TextField's widget for its own
    textarea, which would render the plaintext and turn "blank = keep" into "blank = NULL".
    """
    if "mail_webhook_secrets" not in form.fields:
        return
    field = form.fields["mail_webhook_secrets"] = SecretJSONFormField(
        label=_("Webhook secrets"), required=False
    )
    stored = getattr(instance, "mail_webhook_secrets", None)
    if isinstance(stored, UndecryptableOptions):
        note: Any = _("The stored secrets cannot be decrypted with the configured keys.")
    elif isinstance(stored, Mapping) and stored:
        note = _("Stored: %(masked)s.") % {
            "masked": json.dumps(masked(stored), sort_keys=True, ensure_ascii=False)
        }
    else:
        note = _("Nothing stored.")
    field.help_text = _(
        '%(note)s A JSON object per ESP, e.g. {"mailgun": {"webhook_signing_key": "..."}, '
        '"postmark": {"webhook_secret": "user:password"}}. It replaces everything stored; '
        "leave blank to keep."
    ) % {"note": note}
