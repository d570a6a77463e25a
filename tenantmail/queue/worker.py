"""The worker side of one outbox row: claim it, send it as its tenant, record the outcome.

Drains (:mod:`.batch`) claim many rows at once and reuse this module's per-row parts (loading,
sending as the row's tenant, failures, deferrals); :func:`deliver` is the one-row path, kept for
``deliver_outbox`` tasks enqueued by earlier versions.

Claiming is ``SELECT … FOR UPDATE SKIP LOCKED`` on the row plus a lease (``LEASE_SECONDS``):
two workers never hold the same row, and a row whose worker died comes back when the lease
expires (see :mod:`.recovery`). The send goes through ``TenantBackend`` inside
``sending_as(<schema>)``, so credentials are resolved now, at send time.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.core.mail import EmailMessage
from django.db import connections
from django.utils import timezone

from ..backends import TenantBackend
from ..conf import get_settings
from ..masking import mask
from ..models import OutboxMessage
from ..tenancy import sending_as
from . import ratelimit, recovery, serialize, signals
from .conf import get_queue_settings
from .exceptions import UnstorableMessageError
from .mailers import delivery_backend
from .retry import backoff, classify
from .tasks import enqueue_drain

logger = logging.getLogger("tenantmail.queue")

Status = OutboxMessage.Status
MAX_ERROR_LENGTH = 2000


_CLAIM_SQL = """
UPDATE {table} SET status = %s, attempts = attempts + 1, claim_token = %s, lease_expires_at = %s
WHERE id = (
    SELECT id FROM {table}
    WHERE id = %s AND ((status = %s AND next_attempt_at <= %s)
                       OR (status = %s AND lease_expires_at < %s))
    FOR UPDATE SKIP LOCKED
)
RETURNING *
"""


def claim(outbox_id: int, *, now: datetime.datetime | None = None) -> OutboxMessage | None:
    """Take the row for this worker (status ``sending``, a fresh lease), or ``None``.

    ``None`` when it is not due, already done, or held by a live worker: the task is then a
    harmless no-op (a duplicate task from recovery, say). One statement (``UPDATE … WHERE id =
    (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *``): no transaction held open, one round trip.
    """
    now = now or timezone.now()
    db = get_settings().tenant_db_alias
    lease = datetime.timedelta(seconds=get_queue_settings().lease_seconds)
    sql = _CLAIM_SQL.format(table=connections[db].ops.quote_name(OutboxMessage._meta.db_table))
    params = [
        Status.SENDING.value,
        uuid.uuid4().hex,
        now + lease,
        outbox_id,
        Status.QUEUED.value,
        now,
        Status.SENDING.value,
        now,
    ]
    rows = list(OutboxMessage.objects.db_manager(db).raw(sql, params))
    return rows[0] if rows else None


def deliver(outbox_id: int) -> str:
    """Run by the task: returns ``sent``, ``retrying``, ``failed``, ``deferred`` or ``skipped``."""
    # Before anything else: should this process die from here on (even before the claim),
    # a recovery task runs after the lease on another worker.
    recovery.watch(timezone.now() + datetime.timedelta(seconds=get_queue_settings().lease_seconds))
    recovery.maybe_recover()
    row = claim(outbox_id)
    if row is None:
        return "skipped"
    try:
        # Inside the try: an error of the limiter's own (its Redis gone, say) is recorded on
        # the row and retried like any other, never left as a row stuck in `sending`.
        wait = ratelimit.reserve(row.tenant_schema)
        if wait > 0:
            _defer(row, wait)
            return "deferred"
        message = _deliver_row(row)
    except Exception as exc:
        return _failed(row, exc)
    _sent(row, message)
    return "sent"


def _deliver_row(row: OutboxMessage) -> EmailMessage:
    """Send ``row``'s message as its tenant and return it; errors go to the caller."""
    message = _load(row)
    with _as_tenant(row):
        sent = _delivery_backend(row).send_messages([message])
    if not sent:
        raise RuntimeError("the mail backend reported 0 messages sent")
    return message


def _load(row: OutboxMessage) -> EmailMessage:
    try:
        return serialize.load(row.payload)
    except (ValueError, LookupError, ImportError, AttributeError, TypeError) as exc:
        # A payload this code cannot rebuild (a class since removed, a newer format) will not
        # get better by retrying: fail it now.
        raise UnstorableMessageError(f"the stored message cannot be rebuilt: {exc}") from exc


def _as_tenant(row: OutboxMessage) -> Any:
    # The public schema name is django-tenants' explicit "platform mail", so a row queued as
    # platform mail can never be re-resolved as some ambient tenant in the worker.
    return sending_as(row.tenant_schema or get_settings().public_schema_name)


def _delivery_backend(row: OutboxMessage) -> TenantBackend:
    return delivery_backend(row.mailer, row.options, row.tenant_schema)


def _finish(row: OutboxMessage, **fields: Any) -> bool:
    """Write the outcome, unless another worker took the row over after our lease expired."""
    updated = (
        OutboxMessage.objects.using(get_settings().tenant_db_alias)
        .filter(pk=row.pk, claim_token=row.claim_token)
        .update(claim_token="", lease_expires_at=None, **fields)
    )
    for name, value in fields.items():
        setattr(row, name, value)
    row.claim_token, row.lease_expires_at = "", None
    if not updated:
        logger.warning(
            "tenantmail: outbox message %s outlived its lease (LEASE_SECONDS) and was taken "
            "over by another worker; it may be sent twice (same Message-ID %s)",
            row.pk,
            row.message_id,
        )
    return bool(updated)


def _esp_message_id(message: EmailMessage) -> str:
    status = getattr(message, "anymail_status", None)
    found = getattr(status, "message_id", None)
    if found is None:
        return ""
    if isinstance(found, set | frozenset | list | tuple):
        return ",".join(sorted(str(f) for f in found))[:255]
    return str(found)[:255]


def _sent(row: OutboxMessage, message: EmailMessage) -> None:
    _finish(
        row,
        status=Status.SENT,
        sent_at=timezone.now(),
        esp_message_id=_esp_message_id(message),
        last_error="",
    )
    signals.message_sent.send(sender=OutboxMessage, outbox=row, tenant=row.tenant_schema or None)


def _secret_values(options: Mapping[str, Any]) -> Iterator[str]:
    for value in options.values():
        if isinstance(value, Mapping):
            yield from _secret_values(value)
        elif isinstance(value, str) and len(value) >= 6:
            yield value


def describe(exc: BaseException, row: OutboxMessage) -> str:
    """The error as stored on the row: type and message, with any credential masked."""
    text = f"{type(exc).__name__}: {exc}"
    try:
        with _as_tenant(row):
            # The account the row was (or would be) sent with: its MAILERS alias's, if any.
            options = _delivery_backend(row).resolve().options
    except Exception:  # a tenant that cannot be resolved has no credential to hide
        options = {}
    for secret in sorted(_secret_values(options), key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return text


#: Called with a row's new ``next_attempt_at`` after it was put back: schedules a drain then.
Later = Callable[[datetime.datetime], None]


def drain_at(run_after: datetime.datetime) -> None:
    """One delayed drain task at ``run_after``, which sends whatever is due by then."""
    try:
        enqueue_drain(run_after=run_after)
    except Exception:  # the row is stored as queued: recovery enqueues a drain for it
        logger.exception(
            "tenantmail: could not enqueue the delayed drain task for %s; recovery will",
            run_after.isoformat(),
        )


def _failed(row: OutboxMessage, exc: Exception, later: Later = drain_at) -> str:
    qs = get_queue_settings()
    verdict = classify(exc)
    error = describe(exc, row)
    tenant = row.tenant_schema or None
    if verdict.transient and row.attempts < qs.max_attempts:
        now = timezone.now()
        retry_at = now + datetime.timedelta(seconds=backoff(row.attempts, qs, verdict))
        if _finish(
            row, status=Status.QUEUED, next_attempt_at=retry_at, enqueued_at=now, last_error=error
        ):
            later(retry_at)
        logger.info(
            "tenantmail: outbox message %s for tenant %r failed (attempt %d of %d), retrying at "
            "%s: %s",
            row.pk,
            tenant,
            row.attempts,
            qs.max_attempts,
            retry_at.isoformat(),
            error,
        )
        signals.message_retrying.send(
            sender=OutboxMessage, outbox=row, tenant=tenant, error=exc, retry_at=retry_at
        )
        return "retrying"
    _finish(row, status=Status.FAILED, last_error=error)
    logger.warning(
        "tenantmail: outbox message %s for tenant %r failed for good after %d attempt(s): %s",
        row.pk,
        tenant,
        row.attempts,
        error,
    )
    signals.message_failed.send(sender=OutboxMessage, outbox=row, tenant=tenant, error=exc)
    return "failed"


def _defer(row: OutboxMessage, wait: float, later: Later = drain_at) -> None:
    """Over the tenant's rate limit: put the row back without counting an attempt."""
    now = timezone.now()
    retry_at = now + datetime.timedelta(seconds=wait)
    if _finish(
        row,
        status=Status.QUEUED,
        attempts=row.attempts - 1,
        next_attempt_at=retry_at,
        enqueued_at=now,
    ):
        later(retry_at)
