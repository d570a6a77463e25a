"""The tenant-aware part every ESP view shares: :class:`TenantWebhookMixin`.

Put it before an Anymail webhook view class. Anymail builds its view per request and reads its
secrets in ``__init__``; the mixin defers that ``__init__`` until ``dispatch`` knows the tenant
(from the URL), then runs it with the tenant's own secrets as keyword arguments -- Anymail's
``get_anymail_setting`` takes keyword arguments before settings, so the platform's ``ANYMAIL``
keys are never consulted for a tenant with its own account. Parsing and signature checks stay
Anymail's; the mixin adds attribution (the event's ``metadata["tenant"]`` must match the URL),
clear 4xx answers instead of 500s, and dispatch inside the tenant's schema.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure
from anymail.signals import AnymailInboundEvent, AnymailTrackingEvent
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ImproperlyConfigured
from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import View

from ..conf import get_settings
from ..tenancy import tenant_cache
from .dispatch import deliver
from .tenants import WebhookRejected, WebhookTenant, find_tenant, tenant_secrets

logger = logging.getLogger("tenantmail.webhooks")

type Event = AnymailTrackingEvent | AnymailInboundEvent


class TenantWebhookMixin:
    """Validate with the URL tenant's secret, attribute, dispatch in the tenant's schema."""

    if TYPE_CHECKING:  # provided by the Anymail view class this is mixed into (untyped)
        signal: Signal
        esp_name: str

        def run_validators(self, request: HttpRequest) -> None: ...
        def parse_events(self, request: HttpRequest) -> list[Any]: ...
        @classmethod
        def as_view(cls, **initkwargs: Any) -> Any: ...

    #: URL segment and key in ``mail_webhook_secrets`` ("mailgun", "amazon_ses", ...).
    esp: ClassVar[str]
    #: The Anymail view this extends: the ``sender`` of Anymail's own signal, so receivers
    #: connected with ``sender=MailgunTrackingWebhookView`` keep working.
    anymail_view: ClassVar[type[Any]]
    #: ``tenantmail.signals.tracking`` or ``.inbound``.
    tenant_signal: ClassVar[Signal]
    #: Names a tenant may set in ``mail_webhook_secrets[esp]`` (Anymail's keyword names).
    secret_names: ClassVar[tuple[str, ...]]
    #: Of those, the ones without which a tenant's own-account webhook is refused.
    required_secrets: ClassVar[tuple[str, ...]]
    #: Keyword arguments a tenant's view always gets, so no platform setting leaks in.
    tenant_defaults: ClassVar[dict[str, Any]] = {"webhook_secret": []}

    webhook_tenant: WebhookTenant | None = None

    def __init__(self, **initkwargs: Any) -> None:
        # Deliberately not calling Anymail's __init__ yet: it reads secrets, and the tenant
        # (hence whose secrets) is only known in dispatch().
        self._initkwargs = initkwargs

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        tenant_key = kwargs.pop("tenant_key", None)
        try:
            self.webhook_tenant = None if tenant_key is None else find_tenant(tenant_key)
            try:
                # No local variable holds the secrets: a receiver's exception later in this
                # frame must not put them in Django's error report.
                super().__init__(**{**self._initkwargs, **self.secret_kwargs()})
            except ImproperlyConfigured as error:
                # The platform's ANYMAIL webhook settings are incomplete (Anymail's message names
                # the setting and holds no secret).
                logger.error("tenantmail: %s webhook for %s: %s", self.esp, self._who(), error)
                raise WebhookRejected(403, "webhook not configured") from error
            except (ValueError, TypeError) as error:
                # e.g. a SendGrid verification key that is not a public key: never echo it.
                logger.error(
                    "tenantmail: %s webhook for %s: unusable secret in %s (%s)",
                    self.esp,
                    self._who(),
                    self._secret_setting(),
                    type(error).__name__,
                )
                raise WebhookRejected(403, "webhook not configured") from error
        except WebhookRejected as rejected:
            return self._reject(rejected)
        # Django's View.dispatch, skipping Anymail's: its method_decorator wrappers rebuild
        # the decorated method on every request, and only add the markers set below.
        return View.dispatch(self, request, *args, **kwargs)  # type: ignore[arg-type]

    # ESPs post without a CSRF token or a login, as to Anymail's own views; as_view() copies the
    # markers from dispatch. Applied to the plain function (they only pass their arguments on):
    # method_decorator would rebuild a bound, decorated copy on every request.
    dispatch = csrf_exempt(login_not_required(dispatch))

    def secret_kwargs(self) -> dict[str, Any]:
        tenant = self.webhook_tenant
        if tenant is None or not tenant.own_account:
            return {}  # platform account: Anymail reads the platform's ANYMAIL settings
        secrets = tenant_secrets(tenant, self.esp, self.secret_names, self.required_secrets)
        fetch = self.fetch_kwargs(tenant) if self.fetches_content else {}
        return {**self.tenant_defaults, **secrets, **fetch}

    #: True for inbound views whose content Anymail downloads with account credentials.
    fetches_content: ClassVar[bool] = False

    def fetch_kwargs(self, tenant: WebhookTenant) -> dict[str, Any]:
        """The tenant's own credentials for downloading inbound content (see ``.inbound``)."""
        return {}

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            self._validate(request)
            if not self.claim_once(request):
                # Validly signed, already processed: acknowledge, dispatch nothing.
                return HttpResponse()
        except WebhookRejected as rejected:
            return self._reject(rejected)
        try:
            events = self._parse(request)
            groups = self.attribute(events)
            deliver(self, groups)
        except WebhookRejected as rejected:
            self.release_claim(request)
            return self._reject(rejected)
        except BaseException:
            # A receiver failed: the answer is a 500 and the ESP retries the same signed post,
            # which must then be delivered, not taken for a replay.
            self.release_claim(request)
            raise
        return HttpResponse()

    def claim_once(self, request: HttpRequest) -> bool:
        """For ESPs whose signature does not cover the body (Mailgun): False if already used."""
        return True

    def release_claim(self, request: HttpRequest) -> None:
        """Undo :meth:`claim_once` (the request failed after it: the ESP will retry)."""

    def _validate(self, request: HttpRequest) -> None:
        try:
            self.run_validators(request)
        except AnymailWebhookValidationFailure as failure:
            # Anymail's message may name a platform setting; ours names the tenant's.
            logger.warning(
                "tenantmail: %s webhook for %s failed validation (%s); check %s",
                self.esp,
                self._who(),
                type(failure).__name__,
                self._secret_setting(),
            )
            raise WebhookRejected(400, "webhook validation failed") from failure
        except (AnymailError, ValueError, KeyError, TypeError) as error:
            logger.warning(
                "tenantmail: malformed %s webhook for %s (%s)",
                self.esp,
                self._who(),
                type(error).__name__,
            )
            raise WebhookRejected(400, "malformed webhook body") from error

    def _parse(self, request: HttpRequest) -> list[Event]:
        try:
            return list(self.parse_events(request))
        except WebhookRejected:
            raise
        except Exception as error:
            # Validated but unparsable: a clear 400 (the ESP will not retry a 4xx forever),
            # never a 500 with a traceback.
            logger.warning(
                "tenantmail: unparsable %s webhook for %s (%s)",
                self.esp,
                self._who(),
                type(error).__name__,
            )
            raise WebhookRejected(400, "malformed webhook body") from error

    def attribute(self, events: Iterable[Event]) -> dict[str | None, list[Event]]:
        """Group events by the tenant they belong to (``None``: platform mail).

        At a tenant's URL every event is that tenant's, and one that says otherwise in its
        ``metadata`` rejects the whole request: a tenant signing with its own key must not
        inject events into another tenant's history. At the platform URL (signed with the
        platform's keys) the metadata, stamped at send by TenantBackend, names the tenant.
        """
        key = get_settings().metadata_key
        tenant = self.webhook_tenant
        groups: dict[str | None, list[Event]] = {}
        for event in events:
            claimed = _claimed_tenant(event, key)
            if tenant is not None:
                if claimed is not None and claimed != tenant.schema_name:
                    logger.warning(
                        "tenantmail: %s webhook at tenant %r's URL carries an event for "
                        "tenant %r; rejected the request (cross-tenant injection?)",
                        self.esp,
                        tenant.schema_name,
                        claimed,
                    )
                    raise WebhookRejected(400, "event belongs to another tenant")
                owner: str | None = tenant.schema_name
            else:
                owner = claimed if claimed is not None and _exists(claimed) else None
            groups.setdefault(owner, []).append(event)
        return groups

    def _reject(self, rejected: WebhookRejected) -> HttpResponse:
        return HttpResponse(
            f"tenantmail: {rejected.reason}\n",
            status=rejected.status,
            content_type="text/plain; charset=utf-8",
        )

    def _who(self) -> str:
        tenant = self.webhook_tenant
        return "the platform" if tenant is None else f"tenant {tenant.schema_name!r}"

    def _secret_setting(self) -> str:
        tenant = self.webhook_tenant
        if tenant is None or not tenant.own_account:
            return "the platform's ANYMAIL webhook settings"
        return f'tenant {tenant.schema_name!r} mail_webhook_secrets["{self.esp}"]'


def _claimed_tenant(event: Event, key: str | None) -> str | None:
    metadata = getattr(event, "metadata", None)
    if key is None or not isinstance(metadata, dict):
        return None
    claimed = metadata.get(key)
    return None if claimed is None else str(claimed)


def _exists(schema_name: str) -> bool:
    if schema_name == get_settings().public_schema_name:
        return False
    return tenant_cache.get(schema_name) is not None
