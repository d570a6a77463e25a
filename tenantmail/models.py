"""``TenantMailMixin``: the mail settings that live on the tenant model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils import timezone
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
        )


class OutboxMessage(models.Model):
    """One queued message (``tenantmail.queue``): who it is for, what it is, what happened.

    Lives in the public schema. ``payload`` is the serialized message and ``options`` the
    non-secret backend overrides; no credential is ever stored here (refused at enqueue). The
    worker resolves the tenant's credentials when it sends.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        SENDING = "sending", _("sending")
        SENT = "sent", _("sent")
        FAILED = "failed", _("failed")

    tenant_schema = models.CharField(
        _("tenant schema"), max_length=63, blank=True, help_text=_("Blank for platform mail.")
    )
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.QUEUED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    message_id = models.CharField(_("Message-ID"), max_length=255, blank=True)
    esp_message_id = models.CharField(
        _("ESP message id"), max_length=255, blank=True, db_index=True
    )
    delivery_status = models.CharField(_("delivery status"), max_length=50, blank=True)
    delivery_updated_at = models.DateTimeField(_("delivery updated at"), null=True, blank=True)
    payload = models.JSONField(_("message"), editable=False)
    mailer = models.CharField(
        _("mailer"), max_length=100, blank=True, help_text=_("A MAILERS alias (Django 6.1+).")
    )
    options = models.JSONField(_("backend options"), default=dict, blank=True, editable=False)
    priority = models.SmallIntegerField(_("priority"), default=0)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    enqueued_at = models.DateTimeField(_("task enqueued at"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    claim_token = models.CharField(_("claim token"), max_length=32, blank=True, editable=False)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ("-created_at",)
        indexes = (
            models.Index(fields=["status", "next_attempt_at"], name="tenantmail_outbox_due"),
            models.Index(fields=["status", "lease_expires_at"], name="tenantmail_outbox_lease"),
            models.Index(fields=["tenant_schema", "status"], name="tenantmail_outbox_tenant"),
            models.Index(fields=["created_at"], name="tenantmail_outbox_created"),
        )

    def __str__(self) -> str:
        return f"#{self.pk} {self.tenant_schema or '(platform)'} {self.status}: {self.subject}"


class SendRate(models.Model):
    """Per-tenant send-rate state shared by every queue worker (``tenantmail.queue.ratelimit``).

    One row per rate-limited tenant: the GCRA "theoretical arrival time". Updated with a single
    atomic statement, so the limit holds across processes without locks held between sends.
    """

    key = models.CharField(max_length=100, primary_key=True)
    tat = models.DateTimeField()

    class Meta:
        verbose_name = _("send rate")
        verbose_name_plural = _("send rates")

    def __str__(self) -> str:
        return self.key
