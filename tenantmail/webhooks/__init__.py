"""Delivery events per tenant: webhooks validated with each tenant's own keys.

Owns: tenant-aware subclasses of Anymail's webhook views (:mod:`.views`, :mod:`.esps`), their
URLs (:mod:`.urls`, :func:`tracking_url`), Amazon SNS signature checks (:mod:`.sns`), recording
suppressing events on the tenant's list, and delivery status on the queue's outbox when it exists
(:mod:`.outbox`).

Built on: ``anymail.webhooks.*`` (parsing, signature checks) and Anymail's signals; from the core,
``tenancy.tenant_cache`` (tenant lookup), ``conf`` (public schema, metadata key), ``fields``
(the encrypted ``mail_webhook_secrets``), ``signals`` (``tracking``, ``inbound``,
``suppressed``), ``suppression`` (the per-tenant list, model ``tenantmail.models.Suppression``,
which ``TenantBackend`` enforces on send). The core never imports this package for sending.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ESPS", "inbound_url", "tracking_url"]

#: ESPs with a per-tenant tracking URL (the names used in URLs and ``mail_webhook_secrets``).
ESPS = ("mailgun", "postmark", "sendgrid", "brevo", "resend", "amazon_ses")
INBOUND_ESPS = ("mailgun", "postmark", "sendgrid", "brevo", "resend", "amazon_ses")
#: Other spellings accepted by :func:`tracking_url` (Anymail's names and common short forms).
ESP_ALIASES = {"ses": "amazon_ses", "amazonses": "amazon_ses", "sendinblue": "brevo"}


def esp_key(esp: str) -> str:
    """The URL name of an ESP: ``"Amazon SES"``, ``"amazon-ses"``, ``"ses"`` -> ``"amazon_ses"``."""
    key = esp.strip().lower().replace("-", "_").replace(" ", "_")
    return ESP_ALIASES.get(key, key)


def _tenant_key(tenant: Any) -> str | None:
    if tenant is None or isinstance(tenant, str):
        return tenant
    name = getattr(tenant, "schema_name", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a tenant, a schema name or None, got {type(tenant).__name__}")
    return name


def _reverse(kind: str, tenant: Any, esp: str, supported: tuple[str, ...]) -> str:
    from django.conf import settings
    from django.urls import NoReverseMatch, reverse

    esp = esp_key(esp)
    if esp not in supported:
        raise ValueError(f"no {kind} webhook for {esp!r}; supported: {', '.join(supported)}")
    key = _tenant_key(tenant)
    name = (
        f"tenantmail_webhooks:{esp}_{kind}" if key else f"tenantmail_webhooks:{esp}_platform_{kind}"
    )
    kwargs = {"tenant_key": key} if key else {}
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        # Inside a tenant's request the active urlconf is the tenants' one; the webhooks live
        # in django-tenants' public urlconf.
        public = getattr(settings, "PUBLIC_SCHEMA_URLCONF", None)
        if not public:
            raise
        return reverse(name, kwargs=kwargs, urlconf=public)


def tracking_url(tenant: Any, esp: str) -> str:
    """The path of ``tenant``'s tracking webhook for ``esp`` (``tenant=None``: the platform's).

    ``tenant`` is a tenant instance or schema name. Prefix it with the platform's public origin
    (``https://saas.example``) to get what goes in the ESP's dashboard.
    """
    return _reverse("tracking", tenant, esp, ESPS)


def inbound_url(tenant: Any, esp: str) -> str:
    """The path of ``tenant``'s inbound webhook for ``esp`` (see ``INBOUND_ESPS``)."""
    return _reverse("inbound", tenant, esp, INBOUND_ESPS)
