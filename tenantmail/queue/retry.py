"""What a failure means: retry later (transient) or give up now (permanent), and when to retry.

Transient: HTTP 408/429/5xx, timeouts, connection resets, SMTP 4xx. Permanent: configuration
errors (``ImproperlyConfigured``, which includes a deleted tenant), other 4xx, refused recipients,
messages Anymail cannot send. Anything unknown is retried, bounded by ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import smtplib
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from .conf import QueueSettings
from .exceptions import UnstorableMessageError

_TRANSIENT_HTTP = frozenset({408, 425, 429})
#: Longest Retry-After honoured (a day): beyond that the ESP is telling us something else.
MAX_RETRY_AFTER = 86_400.0


@dataclass(frozen=True)
class Verdict:
    transient: bool
    retry_after: float | None = None  # seconds, from the ESP's Retry-After header


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    if not raw:
        return None
    raw = str(raw).strip()
    if raw.isdigit():
        return min(float(raw), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _smtp_transient(exc: BaseException) -> bool | None:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return None


def classify(exc: BaseException) -> Verdict:
    """Whether ``exc`` (raised while sending) is worth retrying."""
    if isinstance(exc, ImproperlyConfigured | UnstorableMessageError):
        return Verdict(transient=False)
    smtp = _smtp_transient(exc)
    if smtp is not None:
        return Verdict(transient=smtp)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        transient = status in _TRANSIENT_HTTP or 500 <= status < 600
        return Verdict(transient=transient, retry_after=_retry_after(exc))
    if isinstance(exc, OSError):  # timeouts, resets, refused connections, requests errors
        return Verdict(transient=True)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        # Anymail wraps requests' ConnectionError/Timeout in an error without a status.
        inner = classify(cause)
        if inner.transient:
            return inner
    try:
        from anymail.exceptions import AnymailError
    except ImportError:  # pragma: no cover - anymail is a dependency
        return Verdict(transient=True)
    if isinstance(exc, AnymailError) and cause is None:
        # Anymail refusing the message itself (unsupported feature, invalid address, ...).
        return Verdict(transient=False)
    return Verdict(transient=True)


def backoff(attempts: int, settings: QueueSettings, verdict: Verdict) -> float:
    """Seconds to wait before attempt ``attempts + 1``: exponential, jittered, >= Retry-After."""
    ceiling = min(
        settings.backoff_max_seconds, settings.backoff_seconds * 2 ** max(attempts - 1, 0)
    )
    # "Equal jitter": never less than half the step, so retries stay spread but not immediate.
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not cryptographic
    if verdict.retry_after is not None:
        delay = max(delay, verdict.retry_after)
    return float(delay)
