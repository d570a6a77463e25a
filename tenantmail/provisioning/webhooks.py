"""Registering the tenant's tracking webhook with the ESP, for ESPs whose webhooks use basic auth.

A fresh ``user:password`` is generated for each registration; it goes to the ESP and to the
tenant's encrypted ``mail_webhook_secrets[esp]["webhook_secret"]`` (what
:mod:`tenantmail.webhooks` checks), nowhere else. The URL is the platform's public origin plus
:func:`tenantmail.webhooks.tracking_url`. Registering is idempotent: a webhook already registered
at that URL is updated with the new credential rather than added again.

- Postmark, "Webhooks" API (postmarkapp.com/developer/api/webhooks-api), with the tenant's server
  token (``X-Postmark-Server-Token``): ``GET /webhooks`` (``{"Webhooks": [{"ID", "Url", ...}]}``),
  ``POST /webhooks`` and ``PUT /webhooks/{id}`` with ``{"Url", "MessageStream", "HttpAuth":
  {"Username", "Password"}, "Triggers": {...}}``.
- Brevo, "Webhooks" (developers.brevo.com/reference/create-webhook), with the sub-account's key:
  ``GET /webhooks?type=transactional`` (``{"webhooks": [{"id", "url", ...}]}``), ``POST
  /webhooks`` and ``PUT /webhooks/{id}`` with ``{"url", "events", "type"}``; the credential goes
  in the URL (``https://user:password@host/...``), as Anymail's Brevo docs describe.

Mailgun signs webhooks with the (sub)account's signing key and SES publishes through SNS: neither
is registered here (see README).
"""

from __future__ import annotations

import secrets
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from django.views.decorators.debug import sensitive_variables

from ..exceptions import TenantMailConfigurationError
from .base import AccountAPI, Run, shape_error
from .conf import AccountSettings

SUPPORTED: Final = ("postmark", "brevo")

_POSTMARK_TRIGGERS: Final = {
    "Open": {"Enabled": True, "PostFirstOpenOnly": False},
    "Click": {"Enabled": True},
    "Delivery": {"Enabled": True},
    "Bounce": {"Enabled": True, "IncludeContent": False},
    "SpamComplaint": {"Enabled": True, "IncludeContent": False},
    "SubscriptionChange": {"Enabled": True},
}
#: Brevo's transactional event names (developers.brevo.com/docs/transactional-webhooks).
_BREVO_EVENTS: Final = (
    "sent",
    "delivered",
    "hardBounce",
    "softBounce",
    "blocked",
    "spam",
    "invalid",
    "deferred",
    "click",
    "opened",
    "uniqueOpened",
    "unsubscribed",
)


def webhook_url(tenant: Any, esp: str, base_url: str) -> str:
    """``base_url`` (the platform's public origin) + the tenant's tracking path for ``esp``."""
    from ..webhooks import tracking_url  # the webhooks subpackage, only when asked for

    schema = str(getattr(tenant, "schema_name", ""))
    if esp not in SUPPORTED:
        raise TenantMailConfigurationError(
            f"registering {esp} webhooks is not supported (only {', '.join(SUPPORTED)}); set the "
            "tracking URL in the ESP yourself",
            tenant=schema,
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc or "@" in parts.netloc:
        raise TenantMailConfigurationError(
            f"the webhook base URL must be the platform's origin, such as https://saas.example; "
            f"got {base_url!r}",
            tenant=schema,
        )
    return base_url.rstrip("/") + tracking_url(tenant, esp)


def new_secret() -> str:
    """A fresh ``user:password`` for HTTP basic auth."""
    return f"esp-{secrets.token_hex(6)}:{secrets.token_urlsafe(24)}"


@sensitive_variables()
def register(
    run: Run, account: AccountSettings, url: str, key: str | None, secret: str | None
) -> None:
    """Add or update the tenant's webhook at ``url``; ``key`` is the tenant's issued key."""
    if run.dry_run or key is None or secret is None:
        run.log(f"would register the tracking webhook {url} (a new basic-auth credential)")
        return
    api = AccountAPI(
        run,
        account.api_url,
        credential=key,
        credential_setting="the key issued to the tenant",
        headers={"X-Postmark-Server-Token": key} if run.esp == "postmark" else {"api-key": key},
    )
    try:
        if run.esp == "postmark":
            _postmark(run, api, url, secret)
        else:
            _brevo(run, api, url, secret)
    finally:
        api.close()


def _postmark(run: Run, api: AccountAPI, url: str, secret: str) -> None:
    step = "find webhook"
    listed = api.call(step, "GET", "webhooks")
    hooks = listed.get("Webhooks") if isinstance(listed, dict) else None
    if not isinstance(hooks, list):
        raise shape_error(run, step, "'Webhooks' list")
    user, _, password = secret.partition(":")
    body = {"Url": url, "HttpAuth": {"Username": user, "Password": password}}
    body["Triggers"] = _POSTMARK_TRIGGERS
    found = next((h for h in hooks if isinstance(h, dict) and h.get("Url") == url), None)
    if found is not None and found.get("ID"):
        api.call("update webhook", "PUT", f"webhooks/{found['ID']}", json=body)
        run.log(f"PUT webhooks/{found['ID']}: {url} with a new credential")
        return
    api.call("register webhook", "POST", "webhooks", json={**body, "MessageStream": "outbound"})
    run.created.append(f"the tracking webhook {url}")
    run.log(f"POST webhooks: registered {url}")


def _brevo(run: Run, api: AccountAPI, url: str, secret: str) -> None:
    step = "find webhook"
    listed = api.call(step, "GET", "webhooks", params={"type": "transactional"})
    hooks = listed.get("webhooks") if isinstance(listed, dict) else None
    if not isinstance(hooks, list):
        raise shape_error(run, step, "'webhooks' list")
    parts = urlsplit(url)
    authed = urlunsplit(parts._replace(netloc=f"{secret}@{parts.netloc}"))
    found = next(
        (h for h in hooks if isinstance(h, dict) and _without_userinfo(h.get("url")) == url), None
    )
    body = {"url": authed, "events": list(_BREVO_EVENTS)}
    if found is not None and found.get("id"):
        api.call("update webhook", "PUT", f"webhooks/{found['id']}", json=body)
        run.log(f"PUT webhooks/{found['id']}: {url} with a new credential")
        return
    body.update(type="transactional", description="tenantmail tracking")
    api.call("register webhook", "POST", "webhooks", json=body)
    run.created.append(f"the tracking webhook {url}")
    run.log(f"POST webhooks: registered {url}")


def _without_userinfo(url: object) -> str:
    if not isinstance(url, str):
        return ""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
