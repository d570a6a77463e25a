"""One tenant-aware view per Anymail webhook view, and which tenant secrets each takes.

``mail_webhook_secrets`` keys are Anymail's own keyword names, so Anymail's docs on how each ESP
signs its webhooks apply as written; ``REQUIRED`` lists what a tenant with its own account must
set (its events are refused with a 403 until then, never checked with the platform's keys).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, ClassVar

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.webhooks.amazon_ses import AmazonSESBaseWebhookView, AmazonSESTrackingWebhookView
from anymail.webhooks.base import AnymailBasicAuthMixin
from anymail.webhooks.brevo import BrevoTrackingWebhookView
from anymail.webhooks.mailgun import MailgunInboundWebhookView, MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkInboundWebhookView, PostmarkTrackingWebhookView
from anymail.webhooks.resend import ResendTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridInboundWebhookView, SendGridTrackingWebhookView
from django.http import HttpRequest, HttpResponse

from .. import signals
from . import replay, sns
from .conf import get_webhook_settings
from .views import TenantWebhookMixin

logger = logging.getLogger("tenantmail.webhooks")

# -- Mailgun: HMAC-SHA256 of timestamp+token with the webhook signing key -----------------------


class _MailgunFreshness(TenantWebhookMixin):
    """What Mailgun documents and Anymail (15.x) does not do: timestamp age and token reuse.

    Mailgun signs only ``timestamp + token``, not the event: a captured signature would carry any
    body. So a signature is accepted once (remembered in Django's cache for twice the max age),
    and only while fresh. It is claimed before dispatch (a concurrent duplicate is not delivered
    twice) and released if the request then fails, so the ESP's retry after a 500 is delivered.
    """

    secret_names: ClassVar[tuple[str, ...]] = ("webhook_signing_key", "webhook_secret")
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_signing_key",)
    esp = "mailgun"
    # Anymail falls back from the signing key to MAILGUN_API_KEY: a tenant's view never reads
    # the platform's (nor looks for it in settings on every request).
    tenant_defaults: ClassVar[dict[str, Any]] = {"webhook_secret": [], "api_key": None}

    @staticmethod
    def _json_body(request: HttpRequest) -> dict[str, Any] | None:
        """The JSON body parsed as Anymail parses it, once per request (None: not an object)."""
        try:
            return request._tenantmail_mailgun_json  # type: ignore[attr-defined, no-any-return]
        except AttributeError:
            pass
        try:
            loaded = json.loads(request.body.decode("utf-8"))
        except ValueError:  # also UnicodeDecodeError; Anymail's own validator rejects it
            loaded = None
        body: dict[str, Any] | None = loaded if isinstance(loaded, dict) else None
        request._tenantmail_mailgun_json = body  # type: ignore[attr-defined]
        return body

    @classmethod
    def _signature_field(cls, request: HttpRequest, name: str) -> Any:
        if request.content_type != "application/json":
            return request.POST.get(name)
        body = cls._json_body(request)
        block = None if body is None else body.get("signature")
        return block.get(name) if isinstance(block, dict) else None

    def claim_once(self, request: HttpRequest) -> bool:
        # Keyed by the (validated) signature, not the URL's tenant: it is HMAC(key, timestamp +
        # token), so the scope is the signing key. Tenants on the platform's account share the
        # platform's key, and a post seen at one's URL must not be taken again at another's;
        # tenants with their own keys can never collide. The signature is public (it travels
        # with every post) and, once validated, plain hex: a safe key for any cache backend.
        # Kept for twice the max age: a timestamp may be up to max age in the future.
        ttl = 2 * (get_webhook_settings().mailgun_max_age or 86400.0)
        first = replay.claim(self._replay_key(request), ttl)
        if not first:
            logger.info(
                "tenantmail: ignored a reused Mailgun webhook signature for %s", self._who()
            )
        return first

    def release_claim(self, request: HttpRequest) -> None:
        replay.release(self._replay_key(request))

    def _replay_key(self, request: HttpRequest) -> str:
        return f"tenantmail:mailgun:{self._signature_field(request, 'signature')}"

    def validate_request(self, request: HttpRequest) -> None:
        max_age = get_webhook_settings().mailgun_max_age
        if max_age is None:
            return
        timestamp = self._signature_field(request, "timestamp")
        try:
            age = abs(time.time() - float(timestamp))
        except (TypeError, ValueError):
            return
        if age > max_age:
            raise AnymailWebhookValidationFailure(
                "Mailgun webhook timestamp is too old (or in the future); replayed? "
                'See TENANTMAIL["WEBHOOKS"]["MAILGUN_MAX_AGE"]'
            )


class MailgunTrackingView(_MailgunFreshness, MailgunTrackingWebhookView):  # type: ignore[misc]
    anymail_view = MailgunTrackingWebhookView
    tenant_signal = signals.tracking

    def parse_events(self, request: HttpRequest) -> list[Any]:
        body = self._json_body(request) if request.content_type == "application/json" else None
        if body is None:
            return super().parse_events(request)
        # What Anymail's parse_events does with the body its validator also parsed (the same
        # bytes, the same json.loads): converted by Anymail, parsed here once instead of twice.
        return [self.esp_to_anymail_event(body)]


class MailgunInboundView(_MailgunFreshness, MailgunInboundWebhookView):  # type: ignore[misc]
    anymail_view = MailgunInboundWebhookView
    tenant_signal = signals.inbound


# -- Postmark and Brevo: HTTP basic auth in the webhook URL -------------------------------------


class _BasicAuthOnly(TenantWebhookMixin):
    secret_names: ClassVar[tuple[str, ...]] = ("webhook_secret",)
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_secret",)


class PostmarkTrackingView(_BasicAuthOnly, PostmarkTrackingWebhookView):  # type: ignore[misc]
    esp = "postmark"
    anymail_view = PostmarkTrackingWebhookView
    tenant_signal = signals.tracking


class PostmarkInboundView(_BasicAuthOnly, PostmarkInboundWebhookView):  # type: ignore[misc]
    esp = "postmark"
    anymail_view = PostmarkInboundWebhookView
    tenant_signal = signals.inbound


class BrevoTrackingView(_BasicAuthOnly, BrevoTrackingWebhookView):  # type: ignore[misc]
    esp = "brevo"
    anymail_view = BrevoTrackingWebhookView
    tenant_signal = signals.tracking


# -- SendGrid: ECDSA-signed event webhook (tracking); basic auth (inbound parse) ----------------


class SendGridTrackingView(TenantWebhookMixin, SendGridTrackingWebhookView):  # type: ignore[misc]
    esp = "sendgrid"
    anymail_view = SendGridTrackingWebhookView
    tenant_signal = signals.tracking
    secret_names = ("tracking_webhook_verification_key", "webhook_secret")
    required_secrets = ("tracking_webhook_verification_key",)


class SendGridInboundView(_BasicAuthOnly, SendGridInboundWebhookView):  # type: ignore[misc]
    esp = "sendgrid"
    anymail_view = SendGridInboundWebhookView
    tenant_signal = signals.inbound


# -- Resend: Svix-signed webhooks -----------------------------------------------------------------


class ResendTrackingView(TenantWebhookMixin, ResendTrackingWebhookView):  # type: ignore[misc]
    esp = "resend"
    anymail_view = ResendTrackingWebhookView
    tenant_signal = signals.tracking
    secret_names = ("signing_secret", "webhook_secret")
    required_secrets = ("signing_secret",)


# -- Amazon SES: SNS notifications, basic auth + SNS message signature ---------------------------


class SNSChecks(TenantWebhookMixin, AmazonSESBaseWebhookView):  # type: ignore[misc]
    """Basic auth, then the SNS message signature and topic (tracking and inbound alike)."""

    esp = "amazon_ses"
    secret_names: ClassVar[tuple[str, ...]] = ("webhook_secret", "topic_arns")
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_secret",)
    # Auto-confirming a subscription calls SNS with the *platform's* boto3 settings: tenants
    # confirm theirs in the AWS console (the confirmation request is logged and ignored).
    tenant_defaults: ClassVar[dict[str, Any]] = {
        "webhook_secret": [],
        "auto_confirm_sns_subscriptions": False,
    }
    topic_arns: list[str] | None = None

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if self.basic_auth and not request.META.get("HTTP_AUTHORIZATION"):
            # SNS only sends credentials after a 401 challenge (as Anymail's view does).
            response = HttpResponse(status=401)
            response["WWW-Authenticate"] = 'Basic realm="tenantmail webhooks"'
            return response
        return super().post(request, *args, **kwargs)

    def auto_confirm_sns_subscription(self, sns_message: dict[str, Any]) -> None:
        if self.auto_confirm_enabled:
            super().auto_confirm_sns_subscription(sns_message)
            return
        logger.warning(
            "tenantmail: %s received an SNS SubscriptionConfirmation for topic %r; confirm it in "
            "the AWS console (tenant subscriptions are not auto-confirmed)",
            self._who(),
            sns_message.get("TopicArn"),
        )

    def validate_request(self, request: HttpRequest) -> None:
        # Basic auth first: only an authenticated request may make us fetch a certificate.
        AnymailBasicAuthMixin.validate_request(self, request)
        message = self._parse_sns_message(request)
        if not isinstance(message, dict):
            raise AnymailWebhookValidationFailure("SNS body is not a JSON object")
        sns.verify(message)
        if self.topic_arns and message.get("TopicArn") not in self.topic_arns:
            raise AnymailWebhookValidationFailure("SNS TopicArn is not one of topic_arns")


class AmazonSESTrackingView(SNSChecks, AmazonSESTrackingWebhookView):  # type: ignore[misc]
    anymail_view = AmazonSESTrackingWebhookView
    tenant_signal = signals.tracking


TRACKING_VIEWS: dict[str, type[TenantWebhookMixin]] = {
    "mailgun": MailgunTrackingView,
    "postmark": PostmarkTrackingView,
    "sendgrid": SendGridTrackingView,
    "brevo": BrevoTrackingView,
    "resend": ResendTrackingView,
    "amazon_ses": AmazonSESTrackingView,
}
