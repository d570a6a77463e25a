"""A tenant's message defaults, applied to *copies* of the caller's messages.

Defaults never overwrite what the message set (a ``from_email`` Django filled in from
``DEFAULT_FROM_EMAIL`` counts as unset), and every tenant message carries the tenant's schema in
Anymail ``metadata`` so ESP events can be traced back to it.

The caller's message objects are never changed by a default: each message that needs one is
sent as a shallow copy that gets *new* containers for the attributes we set, so neither an
exception halfway through a batch nor the same object sent for two tenants at once can leave one
send's sender, headers or trace on another (undoing changes in place could do neither). After the
send, :func:`hand_back` gives each original what a plain Anymail backend would have left on it
(``anymail_status``, the test backend's ``anymail_test_params``, anything a ``pre_send`` receiver
set) -- except the attributes the defaults own. Platform mail (no tenant) is sent as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from anymail.utils import UNSET
from django.conf import settings
from django.core.mail import EmailMessage

from .conf import get_settings

if TYPE_CHECKING:
    from .config import MailConfig

_MISSING: Final = object()

#: A message we sent as a copy: (the caller's original, the copy, attributes the defaults set).
Copied = tuple[EmailMessage, EmailMessage, dict[str, object]]


def freeze(value: Any) -> Any:
    """A read-only deep copy of validated JSON data (dicts become mapping proxies, lists tuples).

    A memoized :class:`MailConfig` holds its defaults this way, so neither the tenant instance it
    was read from (edited in place, unsaved) nor any code holding the config can change what a
    later send applies without going through validation again.
    """
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    # The message gets plain, fresh containers: ESP payloads merge and JSON-encode them.
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _current(message: EmailMessage, attr: str) -> Any:
    value = getattr(message, attr, UNSET)
    return None if value is UNSET else value


def _changes(
    message: EmailMessage, defaults: Mapping[str, Any], tenant_meta: Mapping[str, str]
) -> dict[str, object]:
    """The attributes to set on this message's copy; each value is a new object."""
    changes: dict[str, object] = {}
    from_email = defaults.get("from_email")
    if from_email and message.from_email in (None, "", settings.DEFAULT_FROM_EMAIL):
        changes["from_email"] = from_email
    reply_to = defaults.get("reply_to")
    if reply_to and not message.reply_to:
        changes["reply_to"] = [reply_to] if isinstance(reply_to, str) else list(reply_to)
    headers = defaults.get("headers")
    if headers:
        present = {name.lower() for name in message.extra_headers}
        extra = {k: v for k, v in headers.items() if k.lower() not in present}
        if extra:
            changes["extra_headers"] = {**extra, **message.extra_headers}
    tags = defaults.get("tags")
    if tags:
        mine = list(_current(message, "tags") or [])
        changes["tags"] = mine + [t for t in tags if t not in mine]
    default_meta = defaults.get("metadata")
    metadata = {
        **(_thaw(default_meta) if default_meta else {}),
        **(_current(message, "metadata") or {}),
    }
    metadata.update(tenant_meta)  # the trace always wins: events are routed back by it
    if metadata:
        changes["metadata"] = metadata
    esp_extra = defaults.get("esp_extra")
    if esp_extra:
        changes["esp_extra"] = {**_thaw(esp_extra), **(_current(message, "esp_extra") or {})}
    for flag in ("track_opens", "track_clicks"):
        if flag in defaults and _current(message, flag) is None:
            changes[flag] = defaults[flag]
    return changes


def _copy(message: EmailMessage, changes: Mapping[str, object]) -> EmailMessage:
    # copy.copy honours a subclass' own __copy__/__reduce_ex__; it shares every container with
    # the original, which is why each changed attribute above is a new object.
    copied = copy.copy(message)
    copied.__dict__.update(changes)
    return copied


def prepare(
    messages: Sequence[EmailMessage], config: MailConfig
) -> tuple[list[EmailMessage], list[Copied]]:
    """What to send for ``messages`` under ``config``: copies where defaults apply.

    Returns the batch to hand to the inner backend, and what :func:`hand_back` needs. Everything
    that can fail (a message attribute of the wrong type, say) runs before anything is sent, and
    none of it touches the caller's objects.
    """
    if config.tenant is None:
        return list(messages), []
    key = get_settings().metadata_key
    tenant_meta = {key: config.tenant} if key else {}
    outgoing: list[EmailMessage] = []
    copied: list[Copied] = []
    for message in messages:
        changes = _changes(message, config.defaults, tenant_meta)
        if changes:
            clone = _copy(message, changes)
            copied.append((message, clone, changes))
            outgoing.append(clone)
        else:
            outgoing.append(message)
    return outgoing, copied


def hand_back(copied: Sequence[Copied]) -> None:
    """Give each original what the send left on its copy, but never a default's value.

    An attribute the send (Anymail, a ``pre_send`` receiver, the test backend) replaced or added
    on the copy goes back to the original, as it would have with a plain Anymail backend; the
    attributes the defaults set keep the caller's own values. Runs whether the send succeeded or
    not: a batch that failed on its 2nd message still reports the 1st one's status.
    """
    for original, clone, changes in copied:
        mine = original.__dict__
        for attr, value in clone.__dict__.items():
            if attr not in changes and mine.get(attr, _MISSING) is not value:
                mine[attr] = value
