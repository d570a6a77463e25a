"""``enqueue()``: store a message durably and make sure a drain task will send it, on commit.

The tenant is captured here, with the same resolution order as ``TenantBackend``
(``tenant=`` > ``sending_as()`` > django-tenants' connection), via ``tenancy.current_tenant``;
only its schema name is stored. Credentials never are: backend overrides must be non-secret.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from email.utils import make_msgid
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.utils import DNS_NAME
from django.db import transaction
from django.utils import timezone

from ..conf import get_settings
from ..masking import PUBLIC_OPTION_NAMES
from ..models import OutboxMessage
from ..tenancy import ActiveTenant, TenantLike, current_tenant
from . import serialize, signals, storing
from .conf import get_queue_settings
from .exceptions import SecretOverrideError
from .mailers import delivery_backend
from .slots import kick
from .tasks import enqueue_drain

logger = logging.getLogger("tenantmail.queue")

#: Rows per INSERT: PostgreSQL takes at most 65,535 parameters per statement (~21 per row).
INSERT_BATCH = 1000


def capture_tenant(explicit: TenantLike = None) -> ActiveTenant | None:
    """Who the mail is for, decided now (in the request), not in the worker.

    The seam for the core's "unresolved" policy: whatever ``current_tenant`` decides for a send
    with no tenant context (platform mail, or a raise) is what a queued send gets too.
    """
    return current_tenant(explicit)


def check_options(options: Mapping[str, Any], *, tenant: str | None) -> dict[str, Any]:
    """Only options known to be harmless may be stored; a credential is refused, by name only.

    ``None`` values carry nothing and are dropped: Django before 6.1 passes
    ``get_connection(username=None, password=None)`` from every ``send_mail()``.
    """
    options = {name: value for name, value in options.items() if value is not None}
    secret = sorted(name for name in options if name not in PUBLIC_OPTION_NAMES)
    if secret:
        raise SecretOverrideError(
            f"backend overrides {secret} may hold credentials, and credentials never enter the "
            "queue; store them on the tenant (mail_options) or in a MAILERS alias and pass "
            "mailer=<alias> instead",
            tenant=tenant,
            setting="QueuedBackend options",
        )
    return dict(options)


def _message_id(message: EmailMessage, payload: dict[str, Any]) -> str:
    """One stable Message-ID per message, so a resend after a crash is recognisably the same."""
    headers = payload["attrs"].get("extra_headers", {"__dict__": {}})["__dict__"]
    for name, value in headers.items():
        if name.lower() == "message-id" and isinstance(value, str):
            return value
    message_id = make_msgid(domain=DNS_NAME.get_fqdn())
    headers["Message-ID"] = message_id
    payload["attrs"]["extra_headers"] = {"__dict__": headers}
    return message_id


def enqueue_many(
    messages: Sequence[EmailMessage],
    *,
    tenant: TenantLike = None,
    run_after: datetime.datetime | None = None,
    mailer: str = "",
    options: Mapping[str, Any] | None = None,
) -> list[OutboxMessage]:
    """Store ``messages`` (all or none) and make sure a drain task sends them, on commit."""
    active = capture_tenant(tenant)
    schema = active.schema_name if active is not None else ""
    stored_options = check_options(options or {}, tenant=schema or None)
    if mailer:  # refused now, in the request, rather than failed later in the worker
        delivery_backend(mailer, stored_options, schema)
    qs = get_queue_settings()
    now = timezone.now()
    due = run_after if run_after is not None else now
    rows = []
    for message in messages:
        payload = serialize.dump(message)  # refuses what cannot be stored, before any write
        rows.append(
            OutboxMessage(
                tenant_schema=schema,
                subject=str(message.subject or "")[:255],
                message_id=_message_id(message, payload)[:255],
                payload=payload,
                mailer=mailer,
                options=stored_options,
                created_at=now,
                next_attempt_at=due,
                enqueued_at=now,
            )
        )
    if not rows:
        return []
    db = get_settings().tenant_db_alias
    # No transaction of our own for a batch that fits one statement: that INSERT is all rows or
    # none, and outside the caller's transaction on_commit runs at once. Round trips per
    # send_mail(): the INSERT, then the slot UPDATE (and, only when it flips a free slot, the
    # drain task's INSERT and a COMMIT).
    chunks = [rows[i : i + INSERT_BATCH] for i in range(0, len(rows), INSERT_BATCH)]
    with transaction.atomic(using=db, savepoint=False) if len(chunks) > 1 else nullcontext():
        for chunk in chunks:
            storing.insert(chunk, schema=schema, fair_share=qs.fair_share, db=db)
    # On commit: the rows must be committed before the drain slots are looked at (see .slots).
    transaction.on_commit(lambda: _schedule(run_after), using=db, robust=True)
    for row in rows:
        signals.message_queued.send(sender=OutboxMessage, outbox=row, tenant=schema or None)
    return rows


def _schedule(run_after: datetime.datetime | None) -> None:
    """Make sure a drain task will send the committed rows: now (a slot) or at ``run_after``."""
    try:
        if run_after is not None and run_after > timezone.now():
            enqueue_drain(run_after=run_after)
        else:
            kick()
    except Exception:
        # The rows are stored: `tenantmail_recover` (or any worker) enqueues a drain later.
        logger.exception(
            "tenantmail: could not enqueue the drain task for queued outbox messages; they stay "
            "queued and will be recovered"
        )


def enqueue(
    message: EmailMessage,
    *,
    tenant: TenantLike = None,
    run_after: datetime.datetime | None = None,
    mailer: str = "",
    options: Mapping[str, Any] | None = None,
) -> OutboxMessage:
    """Queue one message for the tenant active now (or ``tenant=``); returns the stored row.

    Inside a transaction the drain is kicked when it commits (a rollback sends
    nothing). ``run_after`` (an aware datetime) delays delivery.
    """
    return enqueue_many(
        [message], tenant=tenant, run_after=run_after, mailer=mailer, options=options
    )[0]
