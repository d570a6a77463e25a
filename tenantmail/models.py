"""``TenantMailMixin``: the mail settings that live on the tenant model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

from .fields import EncryptedJSONField


@dataclass(frozen=True)
class TenantMailSource:
    """What a tenant says about its own mail, before validation.

    ``backend=None`` means "use the platform default" (``defaults`` still apply, so a tenant on
    the platform's account can still have its own ``from_email``).
    """

    backend: str | None
    options: Any = field(default_factory=dict, repr=False)
    defaults: Any = field(default_factory=dict)
    #: The platform-set sub-account identifier (sub-account backends only; see tenantmail.esp).
    subaccount: str = ""


class TenantMailMixin(models.Model):
    """Add to the django-tenants tenant model (``class Client(TenantMixin, TenantMailMixin)``)."""

    mail_backend = models.CharField(
        _("mail backend"),
        max_length=200,
        blank=True,
        default="",
        help_text=_(
            'Blank for the platform default, or an allowed backend: "mailgun", "postmark", '
            '"amazon_ses", "sendgrid", "smtp", ... or a dotted path.'
        ),
    )
    mail_options = EncryptedJSONField(
        _("mail options"),
        help_text=_(
            'The backend\'s keyword arguments as JSON, e.g. {"api_key": "...", '
            '"sender_domain": "mg.example.com"}. Stored encrypted. Leave blank to keep.'
        ),
    )
    mail_defaults = models.JSONField(
        _("mail defaults"),
        default=dict,
        blank=True,
        help_text=_(
            "Defaults for this tenant's messages: from_email, reply_to, headers, tags, "
            "metadata, esp_extra."
        ),
    )

    mail_subaccount = models.CharField(
        _("mail sub-account"),
        max_length=200,
        blank=True,
        default="",
        help_text=_(
            "Set by the platform operator only: the ESP sub-account this tenant sends as with the "
            'platform\'s parent credential (mail_backend "mailgun_subaccount", '
            '"sparkpost_subaccount" or "amazon_ses_tenant"). Not a secret.'
        ),
    )

    class Meta:
        abstract = True

    def get_mail_config(self) -> TenantMailSource:
        """Override to compute the tenant's mail settings some other way (e.g. from a plan).

        Returning ``TenantMailSource(backend=None)`` selects the platform default.
        """
        return TenantMailSource(
            backend=self.mail_backend or None,
            options=self.mail_options if self.mail_options is not None else {},
            defaults=self.mail_defaults if self.mail_defaults is not None else {},
            subaccount=self.mail_subaccount or "",
        )
