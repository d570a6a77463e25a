"""Applying a tenant's message defaults for the duration of one send.

Defaults never overwrite what the message set (a ``from_email`` Django filled in from
``DEFAULT_FROM_EMAIL`` counts as unset), and every tenant message carries the tenant's schema in
Anymail ``metadata`` so ESP events can be traced back to it. The changes are undone after the
send: a message object re-sent for another tenant must not keep the first tenant's sender.
Platform mail (no tenant) is not touched at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from anymail.utils import UNSET
from django.conf import settings
from django.core.mail import EmailMessage

from .conf import get_settings
from .config import MailConfig

_MISSING: Final = object()

Undo = list[tuple[str, object]]


def _current(message: EmailMessage, attr: str) -> Any:
    value = getattr(message, attr, UNSET)
    return None if value is UNSET else value


def _set(message: EmailMessage, attr: str, value: object, undo: Undo) -> None:
    undo.append((attr, message.__dict__.get(attr, _MISSING)))
    setattr(message, attr, value)


def _apply(message: EmailMessage, defaults: Mapping[str, Any], tenant_meta: dict[str, str]) -> Undo:
    undo: Undo = []
    from_email = defaults.get("from_email")
    if from_email and message.from_email in (None, "", settings.DEFAULT_FROM_EMAIL):
        _set(message, "from_email", from_email, undo)
    reply_to = defaults.get("reply_to")
    if reply_to and not message.reply_to:
        _set(message, "reply_to", [reply_to] if isinstance(reply_to, str) else list(reply_to), undo)
    headers = defaults.get("headers")
    if headers:
        present = {name.lower() for name in message.extra_headers}
        extra = {k: v for k, v in headers.items() if k.lower() not in present}
        if extra:
            _set(message, "extra_headers", {**extra, **message.extra_headers}, undo)
    tags = defaults.get("tags")
    if tags:
        mine = list(_current(message, "tags") or [])
        _set(message, "tags", mine + [t for t in tags if t not in mine], undo)
    metadata = {**defaults.get("metadata", {}), **(_current(message, "metadata") or {})}
    metadata.update(tenant_meta)  # the trace always wins: events are routed back by it
    if metadata:
        _set(message, "metadata", metadata, undo)
    esp_extra = defaults.get("esp_extra")
    if esp_extra:
        _set(message, "esp_extra", {**esp_extra, **(_current(message, "esp_extra") or {})}, undo)
    for flag in ("track_opens", "track_clicks"):
        if flag in defaults and _current(message, flag) is None:
            _set(message, flag, defaults[flag], undo)
    return undo


def _undo(message: EmailMessage, undo: Undo) -> None:
    for attr, old in reversed(undo):
        if old is _MISSING:
            message.__dict__.pop(attr, None)
        else:
            setattr(message, attr, old)


def apply_defaults(messages: Sequence[EmailMessage], config: MailConfig) -> list[Undo]:
    """Apply ``config``'s defaults and tenant trace; returns what :func:`undo_defaults` needs.

    (Two plain functions rather than a context manager: this runs on every send.)
    """
    if config.tenant is None:
        return []
    key = get_settings().metadata_key
    tenant_meta = {key: config.tenant} if key else {}
    return [_apply(message, config.defaults, tenant_meta) for message in messages]


def undo_defaults(messages: Sequence[EmailMessage], undos: list[Undo]) -> None:
    # Reverse order: a message listed twice must end with its *original* attributes.
    for message, undo in reversed(list(zip(messages, undos, strict=True))):
        _undo(message, undo)
