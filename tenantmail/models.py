"""``TenantMailMixin``: the mail settings that live on the tenant model; shared public models.

``Suppression`` (public schema, keyed by tenant schema name) is written by
:mod:`tenantmail.webhooks` and read by the send path when ``TENANTMAIL["SUPPRESSION"]`` is on.
"""

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


class TenantMailQuerySet(models.QuerySet[Any]):
    """Bulk writes that bypass ``post_save`` still drop what this process cached about tenants.

    ``update()``, ``bulk_update()`` and ``bulk_create()`` send no signal, so without this a
    credential or schema name changed through them kept resolving to the old row (and a name
    created through them to "no such tenant") until ``TENANT_CACHE_SECONDS`` ran out. Which
    rows changed is not known without another query, so the whole (small, per-process) tenant
    cache is dropped -- now, and again when the transaction commits.
    """

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        _forget_all(self.db)
        return rows

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        rows = super().bulk_update(objs, fields, batch_size=batch_size)
        _forget_all(self.db)
        return rows

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)
        _forget_all(self.db)
        return created


def _forget_all(using: str) -> None:
    from .invalidation import forget_all_tenants

    forget_all_tenants(using)


class TenantMailMixin(models.Model):
    """Add to the django-tenants tenant model (``class Client(TenantMixin, TenantMailMixin)``).

    Its default manager, ``objects``, is built on :class:`TenantMailQuerySet`; a model that
    declares its own manager should build it on that queryset too.
    """

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

    objects = TenantMailQuerySet.as_manager()
    mail_webhook_secrets = EncryptedJSONField(
        _("mail webhook secrets"),
        help_text=_(
            "Keys the tenant's ESP account signs its event webhooks with, per ESP, e.g. "
            '{"mailgun": {"webhook_signing_key": "..."}}. Stored encrypted; never passed to '
            "the sending backend. Leave blank to keep."
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


class Suppression(models.Model):
    """An address a tenant must not send to any more (hard bounce, complaint, unsubscribe).

    Lives in the public schema and is keyed by the tenant's schema name, so one table serves
    every tenant and a tenant's list survives nothing but its own entries being removed.
    """

    class Reason(models.TextChoices):
        BOUNCED = "bounced", _("hard bounce")
        COMPLAINED = "complained", _("spam complaint")
        UNSUBSCRIBED = "unsubscribed", _("unsubscribed")
        MANUAL = "manual", _("added by hand")

    tenant_schema = models.CharField(_("tenant schema"), max_length=63)
    address = models.CharField(_("address"), max_length=254, help_text=_("Lower-cased."))
    reason = models.CharField(_("reason"), max_length=20, choices=Reason.choices)
    esp_name = models.CharField(_("ESP"), max_length=40, blank=True, default="")
    event_id = models.CharField(_("ESP event id"), max_length=200, blank=True, default="")
    created_at = models.DateTimeField(_("suppressed at"), auto_now_add=True)

    class Meta:
        app_label = "tenantmail"
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppressed addresses")
        constraints = [  # noqa: RUF012 (Django's Meta API)
            models.UniqueConstraint(
                fields=["tenant_schema", "address"], name="tenantmail_suppression_unique"
            )
        ]
        ordering = ["tenant_schema", "address"]  # noqa: RUF012

    def __str__(self) -> str:
        return f"{self.address} ({self.tenant_schema}: {self.reason})"
