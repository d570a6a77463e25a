"""Inbound views per tenant: Mailgun, Postmark, SendGrid, and Brevo, Resend and Amazon SES.

Brevo (attachments), Resend (the whole message) and SES with an S3 receipt action download the
content with account credentials after the post is validated. For a tenant with its own account
that is the tenant's own sending credential, taken from its mail options when it sends through
that same ESP (Brevo/Resend ``api_key``; SES ``session_params`` access keys and region), and
never the platform's: a platform key would let any tenant's signed post make the platform read
its own account (Resend message ids, S3 bucket and key are in the tenant-signed body). Without
one, a post that needs a download is refused (403, logged with the setting to fix).

The API host is Anymail's (the platform's ``ANYMAIL`` ``*_API_URL``, default the ESP's public
API), never a tenant's ``api_url``: what comes back is handed to receivers as message content,
so a tenant-chosen URL would let a tenant read whatever the platform's servers can reach. SES
downloads use the tenant's region only (no tenant ``endpoint_url``), for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from anymail.webhooks.amazon_ses import AmazonSESInboundWebhookView
from anymail.webhooks.brevo import BrevoInboundWebhookView
from anymail.webhooks.resend import ResendInboundWebhookView

from .. import signals
from ..conf import expand_backend
from .esps import (
    MailgunInboundView,
    PostmarkInboundView,
    SendGridInboundView,
    SNSChecks,
    _BasicAuthOnly,
)
from .tenants import WebhookRejected, WebhookTenant
from .views import TenantWebhookMixin

logger = logging.getLogger("tenantmail.webhooks")

#: What a tenant's SES download may use from its ``session_params`` (no profile: that would be
#: a profile of the platform's AWS configuration).
_SES_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region_name")


def own_options(tenant: WebhookTenant, esp: str) -> Mapping[str, Any]:
    """The tenant's mail options when it sends through ``esp`` itself, else ``{}``."""
    source = tenant.instance.get_mail_config()
    if not source.backend or expand_backend(str(source.backend)) != expand_backend(esp):
        return {}
    options = source.options
    return options if isinstance(options, Mapping) else {}


def _refuse_download(view: TenantWebhookMixin, setting: str) -> WebhookRejected:
    tenant = view.webhook_tenant
    name = "?" if tenant is None else tenant.schema_name
    logger.warning(
        "tenantmail: tenant %r received a %s inbound post whose content must be downloaded, but "
        "has no %s of its own in mail_options (set it, sending through %s; the platform's "
        "credentials are never used for a tenant's account)",
        name,
        view.esp,
        setting,
        view.esp,
    )
    return WebhookRejected(403, "inbound content download not configured for this tenant")


class _DownloadsWithApiKey(TenantWebhookMixin):
    fetches_content: ClassVar[bool] = True

    def fetch_kwargs(self, tenant: WebhookTenant) -> dict[str, Any]:
        key = own_options(tenant, self.esp).get("api_key")
        # None (never absent): Anymail would otherwise read the platform's *_API_KEY.
        return {"api_key": key if isinstance(key, str) and key else None}

    def _api_key(self) -> Any:
        key = getattr(self, "api_key", None)
        if not key:
            raise _refuse_download(self, "api_key")
        return key


class BrevoInboundView(_BasicAuthOnly, _DownloadsWithApiKey, BrevoInboundWebhookView):  # type: ignore[misc]
    esp = "brevo"
    anymail_view = BrevoInboundWebhookView
    tenant_signal = signals.inbound

    def _fetch_attachment(self, attachment: Any) -> Any:
        self._api_key()
        return super()._fetch_attachment(attachment)


class ResendInboundView(_DownloadsWithApiKey, ResendInboundWebhookView):  # type: ignore[misc]
    esp = "resend"
    anymail_view = ResendInboundWebhookView
    tenant_signal = signals.inbound
    # Resend signs inbound posts with the inbound endpoint's own Svix secret (Anymail's name).
    secret_names: ClassVar[tuple[str, ...]] = ("inbound_secret", "webhook_secret")
    required_secrets: ClassVar[tuple[str, ...]] = ("inbound_secret",)

    def _fetch_inbound_email(self, email_id: str) -> Any:
        self._api_key()
        return super()._fetch_inbound_email(email_id)


class AmazonSESInboundView(SNSChecks, AmazonSESInboundWebhookView):  # type: ignore[misc]
    anymail_view = AmazonSESInboundWebhookView
    tenant_signal = signals.inbound
    fetches_content: ClassVar[bool] = True
    tenant_defaults: ClassVar[dict[str, Any]] = {
        **SNSChecks.tenant_defaults,
        "inbound_kms_key_id": None,  # never the platform's KMS key
    }

    def fetch_kwargs(self, tenant: WebhookTenant) -> dict[str, Any]:
        options = own_options(tenant, self.esp)
        session = options.get("session_params")
        session = session if isinstance(session, Mapping) else {}
        client = options.get("client_params")
        region = client.get("region_name") if isinstance(client, Mapping) else None
        return {
            "session_params": {k: session[k] for k in _SES_KEYS if session.get(k)},
            "client_params": {"region_name": region} if region else {},
        }

    def get_boto_client(self, service_name: str, **kwargs: Any) -> Any:
        tenant = self.webhook_tenant
        if tenant is not None and tenant.own_account:
            session = self.session_params
            if not (session.get("aws_access_key_id") and session.get("aws_secret_access_key")):
                # boto3 would fall back to the platform's environment / instance role.
                raise _refuse_download(self, "session_params (AWS access keys)")
        return super().get_boto_client(service_name, **kwargs)


#: ESPs with a per-tenant inbound URL.
INBOUND_VIEWS: dict[str, type[TenantWebhookMixin]] = {
    "mailgun": MailgunInboundView,
    "postmark": PostmarkInboundView,
    "sendgrid": SendGridInboundView,
    "brevo": BrevoInboundView,
    "resend": ResendInboundView,
    "amazon_ses": AmazonSESInboundView,
}
