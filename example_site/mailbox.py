"""What the fake servers received, joined with what the site sent, for the page and the demo.

Two independent sides:

- *sent* -- ``tenantmail.signals.post_send`` says which tenant a message was sent as, with which
  backend, on whose account (own / platform) and whether a per-send override was given;
- *received* -- the fake servers say which credential actually reached them.

A row is isolated when the credential the server saw belongs to the tenant the message was sent
as (or to the platform, for a tenant without its own account).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import make_msgid
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage

from example_site.fakes import Received
from tenantmail.conf import BACKEND_ALIASES
from tenantmail.config import MailConfig
from tenantmail.masking import mask

SMTP_BACKEND = BACKEND_ALIASES["smtp"]
_SHORT = {path: short for short, path in BACKEND_ALIASES.items()}
#: Options whose value is what an ESP sees as the credential.
_CREDENTIAL_OPTIONS = ("api_key", "server_token", "api_token", "secret_key")


@dataclass(frozen=True)
class Sent:
    tenant: str | None
    backend: str
    own_account: bool
    overridden: bool


class SentLog:
    """message id -> :class:`Sent`, filled from tenantmail's signals (bounded, thread-safe)."""

    MAX = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Sent] = OrderedDict()

    def add(self, message_id: str, sent: Sent) -> None:
        with self._lock:
            self._entries[message_id] = sent
            while len(self._entries) > self.MAX:
                self._entries.popitem(last=False)

    def get(self, message_id: str) -> Sent | None:
        with self._lock:
            return self._entries.get(message_id)


sent_log = SentLog()


def message_id_of(message: EmailMessage) -> str | None:
    """The id the receiving server records: the ESP's id, or the Message-ID header for SMTP."""
    status = getattr(message, "anymail_status", None)
    if status is not None and status.message_id:
        return str(status.message_id)
    header = message.extra_headers.get("Message-ID")
    return str(header) if header else None


def on_pre_send(
    sender: Any, config: MailConfig, messages: Sequence[EmailMessage], **kw: Any
) -> None:
    # Django's SMTP backend makes up a Message-ID while sending and forgets it; set one first so
    # that what the SMTP server records can be matched with what was sent.
    if config.backend == SMTP_BACKEND:
        for message in messages:
            message.extra_headers.setdefault("Message-ID", make_msgid(domain="tenantmail.demo"))


def on_post_send(
    sender: Any,
    config: MailConfig,
    backend: Any,
    messages: Sequence[EmailMessage],
    error: BaseException | None = None,
    **kw: Any,
) -> None:
    if error is not None:
        return
    overrides = getattr(backend, "overrides", {}) or {}
    sent = Sent(
        tenant=config.tenant,
        backend=_SHORT.get(config.backend, config.backend),
        own_account=config.own_account,
        overridden=any(v is not None for v in overrides.values()),
    )
    for message in messages:
        message_id = message_id_of(message)
        if message_id:
            sent_log.add(message_id, sent)


@dataclass(frozen=True)
class Row:
    """One received message, as the page and the demo show it."""

    received_at: datetime
    server: str
    esp: str  # the API the message came in through: "mailgun", "postmark", "sendgrid", "smtp"
    tenant: str  # schema it was sent as, "(platform)" for platform mail
    backend: str  # what tenantmail used: "mailgun", "smtp", ... ("" if not sent through it)
    own_account: bool  # the tenant's own account (False: the platform's)
    overridden: bool
    credential: str  # the full credential; only ever *displayed* masked
    credential_owner: str | None  # whose stored credential it is (None: nobody's)
    from_email: str
    to: tuple[str, ...]
    subject: str
    message_id: str
    #: The sub-account the ESP was asked to send as (Mailgun's X-Mailgun-On-Behalf-Of), if any.
    on_behalf_of: str | None = None

    @property
    def credential_masked(self) -> str:
        return mask(self.credential) if self.credential else "(no login)"

    @property
    def credential_sha256(self) -> str:
        """Lets a test check the exact credential without the page ever showing it."""
        return hashlib.sha256(self.credential.encode()).hexdigest()

    @property
    def verdict(self) -> tuple[bool, str]:
        """(isolated?, why) from the owner of the credential vs the tenant it was sent as."""
        owner = self.credential_owner
        if self.overridden:
            if owner is None or owner == self.tenant:
                return True, "per-send override"
            return False, f"override used {owner}'s credential"
        if self.tenant == "(platform)":
            if owner in ("platform", "platform relay"):
                return True, "platform mail on the platform's account"
            return False, f"platform mail used {owner or 'an unknown'} credential"
        if owner == self.tenant and self.on_behalf_of:
            return True, f"{self.tenant}'s sub-account (platform parent key)"
        if owner == self.tenant:
            return True, f"{self.tenant}'s own account"
        if owner == "platform" and not self.own_account:
            return True, "platform account (no own config)"
        return False, f"WRONG: {owner or 'unknown'} credential"

    @property
    def ok(self) -> bool:
        return self.verdict[0]


def credential_owners() -> dict[tuple[str, str], str]:
    """(esp, credential) -> whose it is: a schema name, "platform" or "platform relay".

    Read from the tenants' stored (decrypted) options and the platform settings, so the page
    shows whose credential a server saw -- not what tenantmail claims it used.
    """
    from example_site.customers.models import Client

    owners: dict[tuple[str, str], str] = {}
    for key in _platform_credentials():
        owners[("mailgun", key)] = "platform"
    for tenant in Client.objects.exclude(schema_name="public").exclude(mail_backend=""):
        options = tenant.mail_options if isinstance(tenant.mail_options, Mapping) else {}
        esp = _SHORT.get(tenant.mail_backend, tenant.mail_backend)
        if esp == "smtp":
            username, password = options.get("username"), options.get("password")
            owners[("smtp", f"{username}:{password}" if username else "")] = tenant.schema_name
            continue
        for name in _CREDENTIAL_OPTIONS:
            if options.get(name):
                owners[(esp, str(options[name]))] = tenant.schema_name
    return owners


def _platform_credentials() -> Iterable[str]:
    mailers = getattr(settings, "MAILERS", None)
    if isinstance(mailers, Mapping) and "platform" in mailers:
        yield str(mailers["platform"].get("OPTIONS", {}).get("api_key", ""))
    default = getattr(settings, "TENANTMAIL", {}).get("DEFAULT")
    if isinstance(default, Mapping):
        yield str(default.get("OPTIONS", {}).get("api_key", ""))


def rows(received: Sequence[Received]) -> list[Row]:
    from example_site.customers.models import Client

    owners = credential_owners()
    configured = set(Client.objects.exclude(mail_backend="").values_list("schema_name", flat=True))
    out = []
    for item in received:
        msg = item.message
        sent = sent_log.get(msg.message_id)
        tenant = msg.metadata.get("tenant") or (sent.tenant if sent else None) or "(platform)"
        owner = owners.get((msg.esp, msg.credential))
        if msg.on_behalf_of is not None:  # the parent key: whose is the sub-account it named?
            owner = subaccount_owner(msg.esp, msg.credential, msg.on_behalf_of)
        if item.server == "platform SMTP relay":
            owner = "platform relay"  # the platform's own server, whatever the login
        out.append(
            Row(
                received_at=datetime.fromtimestamp(msg.received_at, tz=UTC),
                server=item.server,
                esp=msg.esp,
                tenant=tenant,
                backend=sent.backend if sent else "",
                own_account=sent.own_account if sent else tenant in configured,
                overridden=bool(sent and sent.overridden),
                credential=msg.credential,
                credential_owner=owner,
                from_email=msg.from_email,
                to=tuple(msg.to),
                subject=msg.subject,
                message_id=msg.message_id,
                on_behalf_of=msg.on_behalf_of,
            )
        )
    return out


def subaccount_owner(esp: str, credential: str, on_behalf_of: str) -> str | None:
    """The tenant whose sub-account ``on_behalf_of`` is, if ``credential`` is the parent key."""
    from example_site.customers.models import Client

    parent = getattr(settings, "TENANTMAIL", {}).get("SUBACCOUNTS", {}).get(esp, {})
    if not on_behalf_of or credential != parent.get("api_key"):
        return None
    tenant = Client.objects.filter(mail_subaccount=on_behalf_of).first()
    return tenant.schema_name if tenant is not None else None
