"""Per-tenant suppression: recorded from events, enforced (if enabled) on the next send.

Hard bounces, complaints and unsubscribes add the recipient to *that tenant's* list
(:class:`tenantmail.models.Suppression`, public schema). ``TENANTMAIL["SUPPRESSION"]``:

- ``"off"`` (default): recorded only; sending is unchanged and costs one cached settings read;
- ``"drop"``: suppressed recipients are left out of what is sent (listed on the caller's message
  as ``tenantmail_suppressed``, signalled by ``tenantmail.signals.suppressed``); the caller's
  ``to``/``cc``/``bcc`` are not changed: the copy the send path makes (:mod:`tenantmail.defaults`)
  carries the remaining recipients. A message left without recipients is not sent and not
  counted, and a batch left empty opens no connection;
- ``"raise"``: the batch is refused with :class:`SuppressedRecipientError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING

from anymail.signals import AnymailTrackingEvent, EventType
from django.core.mail import EmailMessage

from . import signals
from .conf import get_settings
from .exceptions import TenantMailError

if TYPE_CHECKING:
    from .config import MailConfig

logger = logging.getLogger("tenantmail.suppression")

#: Anymail's event type -> Suppression.reason. BOUNCED is a hard bounce (soft ones are DEFERRED).
SUPPRESSING_EVENTS = {
    EventType.BOUNCED: "bounced",
    EventType.COMPLAINED: "complained",
    EventType.UNSUBSCRIBED: "unsubscribed",
}

_RECIPIENT_FIELDS = ("to", "cc", "bcc")


class Kept(list[EmailMessage]):
    """The caller's messages still to send, with the recipients each keeps ("drop" mode).

    ``recipients`` maps ``id(message)`` to the ``to``/``cc``/``bcc`` lists to send it with;
    :func:`tenantmail.defaults.prepare` sets them on the message's copy.
    """

    def __init__(
        self, messages: Iterable[EmailMessage], recipients: dict[int, dict[str, list[str]]]
    ) -> None:
        super().__init__(messages)
        self.recipients = recipients


class SuppressedRecipientError(TenantMailError):
    """A send names addresses on the tenant's suppression list (``SUPPRESSION = "raise"``)."""

    def __init__(self, tenant: str, addresses: Sequence[str]) -> None:
        self.tenant = tenant
        self.addresses = list(addresses)
        super().__init__(
            f"tenant {tenant!r}: {len(addresses)} recipient(s) are on the tenant's suppression "
            f"list ({', '.join(addresses)}); remove them from the message, remove the entries "
            'in the admin, or set TENANTMAIL["SUPPRESSION"] = "drop"'
        )


def normalize(address: str) -> str:
    """``"Ann <Ann@Example.COM>"`` -> ``"ann@example.com"``."""
    return parseaddr(address)[1].strip().lower()


def _schema(tenant: str | None) -> str:
    return tenant or get_settings().public_schema_name


def record_events(tenant: str | None, events: Iterable[AnymailTrackingEvent], esp_name: str) -> int:
    """Add the recipients of suppressing events to ``tenant``'s list (idempotent)."""
    from .models import Suppression

    schema = _schema(tenant)
    rows: dict[str, Suppression] = {}
    for event in events:
        reason = SUPPRESSING_EVENTS.get(event.event_type)
        if reason is None or _soft_bounce(event):
            continue  # most events (delivered, opened, ...): no address parsing at all
        address = normalize(event.recipient or "")
        if not address:
            continue
        rows.setdefault(
            address,
            Suppression(
                tenant_schema=schema,
                address=address,
                reason=reason,
                esp_name=esp_name,
                event_id=str(event.event_id or "")[:200],
            ),
        )
    if rows:
        # A replayed event (or a second bounce) finds the row there: the first reason stays.
        Suppression.objects.bulk_create(rows.values(), ignore_conflicts=True)
    return len(rows)


def suppress(tenant: str | None, address: str, reason: str = "manual") -> bool:
    """Add ``address`` to ``tenant``'s list by hand; ``False`` if it was there already."""
    from .models import Suppression

    _obj, created = Suppression.objects.get_or_create(
        tenant_schema=_schema(tenant), address=normalize(address), defaults={"reason": reason}
    )
    return created


def unsuppress(tenant: str | None, address: str) -> bool:
    """Let ``tenant`` send to ``address`` again; ``False`` if it was not suppressed."""
    from .models import Suppression

    deleted, _by_model = Suppression.objects.filter(
        tenant_schema=_schema(tenant), address=normalize(address)
    ).delete()
    return deleted > 0


def _soft_bounce(event: AnymailTrackingEvent) -> bool:
    """Anymail reports some temporary bounces as BOUNCED; they must not suppress."""
    raw = event.esp_event
    if event.event_type != EventType.BOUNCED or not isinstance(raw, dict):
        return False
    if raw.get("event") == "soft_bounce":  # Brevo
        return True
    bounce = raw.get("bounce")  # Amazon SES: only "Permanent" is a hard bounce
    return isinstance(bounce, dict) and bounce.get("bounceType", "Permanent") != "Permanent"


def suppressed_addresses(tenant: str | None, addresses: Iterable[str]) -> set[str]:
    from .models import Suppression

    wanted = {normalize(a) for a in addresses} - {""}
    if not wanted:
        return set()
    return set(
        Suppression.objects.filter(tenant_schema=_schema(tenant), address__in=wanted).values_list(
            "address", flat=True
        )
    )


def enforce(config: MailConfig, messages: Sequence[EmailMessage]) -> Sequence[EmailMessage]:
    """The messages to send (the send path's hook); ``messages`` itself while suppression is off."""
    mode = get_settings().suppression
    if mode == "off":
        return messages
    return _enforce(mode, config.tenant, messages)


def _enforce(
    mode: str, tenant: str | None, messages: Sequence[EmailMessage]
) -> Sequence[EmailMessage]:
    everyone = [a for m in messages for f in _RECIPIENT_FIELDS for a in getattr(m, f, None) or ()]
    blocked = suppressed_addresses(tenant, everyone)
    if not blocked:
        return messages
    if mode == "raise":
        raise SuppressedRecipientError(_schema(tenant), sorted(blocked))
    kept: list[EmailMessage] = []
    recipients: dict[int, dict[str, list[str]]] = {}
    for message in messages:
        dropped: list[str] = []
        remaining: dict[str, list[str]] = {}
        left = False
        for field in _RECIPIENT_FIELDS:
            current = list(getattr(message, field, None) or ())
            keep = [a for a in current if normalize(a) not in blocked]
            if len(keep) != len(current):
                dropped += [a for a in current if normalize(a) in blocked]
                remaining[field] = keep  # a new list, set on the copy only
            left = left or any(keep)
        if dropped:
            # A report, like anymail_status: the caller's recipients themselves stay as they were.
            message.tenantmail_suppressed = dropped  # type: ignore[attr-defined]
            logger.info(
                "tenantmail: tenant %r: not sending to %d suppressed recipient(s)",
                _schema(tenant),
                len(dropped),
            )
            signals.suppressed.send(
                sender=_backend_class(), tenant=tenant, message=message, recipients=dropped
            )
            recipients[id(message)] = remaining
        if left:
            kept.append(message)
    return Kept(kept, recipients)


def _backend_class() -> type:
    from .backends import TenantBackend

    return TenantBackend
