"""Whose webhook this is (the tenant key in the URL) and which secret validates it.

The tenant key is the schema name. It only *routes*; authenticity comes from the tenant's own
signing key / basic-auth credential, so an unguessable URL token would add obscurity, not
security, and would be one more secret to rotate. Unknown and deleted tenants answer the same
404 (that a schema name exists stays observable: schema names are identifiers, not secrets).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..conf import get_settings
from ..fields import UndecryptableOptions
from ..tenancy import tenant_cache

logger = logging.getLogger("tenantmail.webhooks")


class WebhookRejected(Exception):
    """Ends a webhook request with a short, secret-free 4xx answer (and nothing dispatched)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookTenant:
    schema_name: str
    instance: Any
    #: False when the tenant sends through the platform's account (its events are signed with
    #: the platform's keys, i.e. Anymail's own ``ANYMAIL`` webhook settings).
    own_account: bool
    #: (esp, allowed, required) -> the view keyword arguments :func:`tenant_secrets` built.
    secrets: dict[tuple[Any, ...], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )


#: schema name -> what :func:`find_tenant` derived from the tenant cache's instance. Valid while
#: the cache hands out that same instance: every invalidation (a save, a bulk update, a settings
#: change, TENANT_CACHE_SECONDS running out) makes it fetch a new one, so this is dropped with it.
_derived: dict[str, WebhookTenant] = {}


def find_tenant(key: str) -> WebhookTenant:
    """The tenant a URL's tenant key names; :class:`WebhookRejected` (404) if there is none."""
    if not key or key == get_settings().public_schema_name:
        raise WebhookRejected(404, "unknown tenant")
    # The same short-lived cache the send path uses: a burst of events costs one query.
    instance = tenant_cache.get(key)
    if instance is None or instance.pk is None:
        raise WebhookRejected(404, "unknown tenant")
    known = _derived.get(key)
    if known is not None and known.instance is instance:
        return known
    source = instance.get_mail_config()
    # Truthiness, as the send path's resolver decides it (config.resolve): a blank backend from
    # an overridden get_mail_config() is the platform account there, so it must be here too.
    tenant = WebhookTenant(key, instance, own_account=bool(source.backend))
    if len(_derived) >= tenant_cache.MAX_ENTRIES:
        _derived.clear()  # bounded like the tenant cache; rebuilt from it on demand
    _derived[key] = tenant
    return tenant


def tenant_secrets(
    tenant: WebhookTenant, esp: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, Any]:
    """The tenant's webhook secrets for ``esp`` as Anymail view keyword arguments.

    Only names in ``allowed`` pass (a tenant-editable value must not reach arbitrary view
    attributes). Raises :class:`WebhookRejected` (403) when a required one is missing: falling
    back to the platform's keys for a tenant with its own account would accept events signed by
    the platform's account at this tenant's URL.
    """
    memo = (esp, allowed, required)
    known = tenant.secrets.get(memo)
    if known is not None:
        return known
    stored = getattr(tenant.instance, "mail_webhook_secrets", None)
    setting = f'mail_webhook_secrets["{esp}"]'
    if isinstance(stored, UndecryptableOptions):
        logger.error(
            "tenantmail: tenant %r: no TENANTMAIL encryption key decrypts %s; add the key it was "
            'encrypted with to TENANTMAIL["ENCRYPTION_KEYS"]',
            tenant.schema_name,
            "mail_webhook_secrets",
        )
        raise WebhookRejected(403, "webhook secrets unavailable for this tenant")
    entry = stored.get(esp) if isinstance(stored, Mapping) else None
    if not isinstance(entry, Mapping):
        entry = {}
    missing = [name for name in required if not entry.get(name)]
    if missing:
        logger.warning(
            "tenantmail: tenant %r received a %s webhook but has no %s in %s; set it on the "
            "tenant (it sends through its own %s account, so the platform's keys do not apply)",
            tenant.schema_name,
            esp,
            " / ".join(missing),
            setting,
            esp,
        )
        raise WebhookRejected(403, "webhook not configured for this tenant")
    # Kept with the tenant (read-only to callers): decrypted already when the row was loaded.
    secrets = tenant.secrets[memo] = {name: entry[name] for name in allowed if name in entry}
    return secrets
