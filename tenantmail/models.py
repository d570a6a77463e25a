"""``TenantMailMixin``: the mail settings that live on the tenant model; shared public models.

``Suppression`` (public schema, keyed by tenant schema name) is written by
:mod:`tenantmail.webhooks` and read by the send path when ``TENANTMAIL["SUPPRESSION"]`` is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .exceptions import TenantMailConfigurationError
from .fields import EncryptedJSONField
from .masking import PUBLIC_OPTION_NAMES, SecretDict

#: Options that say *where* the stored secrets are sent. Changing one of them while keeping a
#: stored secret would hand that secret to whoever chose the new destination.
ENDPOINT_OPTIONS = frozenset({"api_url", "host", "port", "client_params", "session_params"})
#: Endpoint options that carry secrets themselves (SES ``session_params`` holds the AWS keys): left
#: unchanged while another endpoint option moves, they are a kept secret like any other.
SECRET_ENDPOINT_OPTIONS = frozenset({"session_params"})


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

    mail_webhook_secrets = EncryptedJSONField(
        _("mail webhook secrets"),
        help_text=_(
            "Keys the tenant's ESP account signs its event webhooks with, per ESP, e.g. "
            '{"mailgun": {"webhook_signing_key": "..."}}. Stored encrypted; never passed to '
            "the sending backend. Leave blank to keep."
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

    # Written by tenantmail.verification (never a secret: a stage name and a masked reason).
    mail_verified_at = models.DateTimeField(
        _("mail verified at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When the mail settings were last verified, whatever the result."),
    )
    mail_verification = models.JSONField(
        _("mail verification"),
        default=dict,
        blank=True,
        editable=False,
        help_text=_(
            "The last verification's result: ok, the first failing stage and a masked reason."
        ),
    )

    objects = TenantMailQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        # ORM writes skip clean(); this one rule is about who may aim a secret, so it holds there
        # too. (QuerySet.update() bypasses the model entirely -- see README.)
        error = self._moved_secrets_error()
        if error is not None:
            raise error
        super().save(*args, **kwargs)
        self._remember_mail_endpoint()

    # -- validation: the rules a send applies, all problems at once ----------------------------

    def clean(self) -> None:
        """Refuse what a send would refuse (see :mod:`tenantmail.diagnosis`), every problem at
        once, and a new destination for a kept secret (see :meth:`confirm_mail_endpoint_change`).
        """
        super().clean()
        if getattr(self, "_tenantmail_form_validated", False):
            return  # TenantMailForm already ran the same rules on what it is about to save
        from .diagnosis import tenant_problems  # the resolver imports this module

        errors: dict[str, list[str]] = {}
        moved = self._moved_secrets_error()
        if moved is not None:
            errors.setdefault(self._field_for("mail_options"), []).append(str(moved))
        schema = str(getattr(self, "schema_name", "") or "new tenant")
        for problem in tenant_problems(schema, self.get_mail_config()):
            errors.setdefault(self._field_for(problem.setting), []).append(str(problem))
        if errors:
            raise ValidationError(errors)

    def full_clean(self, exclude: Any = None, *args: Any, **kwargs: Any) -> None:
        # A ModelForm excludes the fields it does not show, and refuses errors keyed by them.
        self._tenantmail_exclude = frozenset(exclude or ())
        try:
            super().full_clean(exclude, *args, **kwargs)
        finally:
            del self._tenantmail_exclude

    def _field_for(self, setting: str | None) -> str:
        names = {f.name for f in self._meta.get_fields()}
        excluded: frozenset[str] = getattr(self, "_tenantmail_exclude", frozenset())
        return setting if setting in names and setting not in excluded else NON_FIELD_ERRORS

    # -- where the stored secrets go -------------------------------------------------------------

    @classmethod
    def from_db(
        cls, db: str | None, field_names: Any, values: Any, *args: Any, **kwargs: Any
    ) -> Self:
        instance = super().from_db(db, field_names, values, *args, **kwargs)
        instance._remember_mail_endpoint()
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        # Django also calls this to load one deferred field: only a reload of mail_options
        # makes the in-memory options the stored ones.
        fields = kwargs.get("fields")
        if fields is None or "mail_options" in fields:
            self._remember_mail_endpoint()

    def _remember_mail_endpoint(self) -> None:
        self._tenantmail_confirmed = False
        if "mail_options" not in self.__dict__:  # deferred: never loaded, so never at risk
            self._tenantmail_loaded: Mapping[str, Any] | None = None
            return
        options = self.mail_options
        self._tenantmail_loaded = SecretDict(options) if isinstance(options, Mapping) else None

    def confirm_mail_endpoint_change(self) -> None:
        """Let the next ``save()`` send the stored secrets to a changed ``api_url``/host/port.

        Only for code that knows the new destination is the secret's owner's (a region move by
        the platform, say). A tenant-facing form must make the person re-enter the secret
        instead: :class:`~tenantmail.admin.TenantMailForm` does.
        """
        self._tenantmail_confirmed = True

    def _moved_secrets_error(self) -> TenantMailConfigurationError | None:
        loaded = getattr(self, "_tenantmail_loaded", None)
        if loaded is None or getattr(self, "_tenantmail_confirmed", False):
            return None
        if "mail_options" not in self.__dict__:
            return None
        old = loaded
        options = self.mail_options
        if not isinstance(options, Mapping):
            return None
        # A new backend alone sends to that ESP's own, fixed endpoint: not a destination a
        # tenant chooses, so only the endpoint options count.
        # Removing one sends nowhere new (the send then refuses the config or uses the ESP's own).
        changed = sorted(
            n for n in ENDPOINT_OPTIONS if options.get(n) not in (None, "", old.get(n))
        )
        kept = sorted(
            name
            for name, value in options.items()
            if name not in PUBLIC_OPTION_NAMES
            and name not in ENDPOINT_OPTIONS - SECRET_ENDPOINT_OPTIONS
            and value not in (None, "")
            and old.get(name) == value
        )
        if not changed or not kept:
            return None
        return TenantMailConfigurationError(
            f"{', '.join(changed)} changed, which changes where the stored "
            f"{', '.join(kept)} is sent; enter {', '.join(kept)} again with the new destination "
            "(or call confirm_mail_endpoint_change() when the platform itself moves it)",
            tenant=str(getattr(self, "schema_name", "") or "new tenant"),
            setting="mail_options",
        )

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
            # (tenant, status, priority): enqueue finds a tenant's deepest priority level and
            # how full it is in O(log n), whatever the tenant's backlog (fairness).
            models.Index(
                fields=["tenant_schema", "status", "priority"], name="tenantmail_outbox_level"
            ),
            models.Index(fields=["created_at"], name="tenantmail_outbox_created"),
            # The batch claim's order (fairness level first, then age) among queued rows.
            models.Index(fields=["status", "-priority", "id"], name="tenantmail_outbox_claim"),
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


class DrainSlot(models.Model):
    """A "drain task pending" flag of the queue (``tenantmail.queue.slots``).

    ``CONCURRENCY`` rows per task queue: an enqueue flips one free slot to pending and enqueues
    one drain task for it, instead of one task per message; the task frees its slot when it
    starts, then sends until no message is due.
    """

    queue_name = models.CharField(max_length=100)
    slot = models.PositiveSmallIntegerField()
    pending = models.BooleanField(default=False)
    pending_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("drain slot")
        verbose_name_plural = _("drain slots")
        constraints = (
            models.UniqueConstraint(
                fields=["queue_name", "slot"], name="tenantmail_drainslot_unique"
            ),
        )

    def __str__(self) -> str:
        return f"{self.queue_name}#{self.slot}{' (pending)' if self.pending else ''}"
