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
from django.core.signals import setting_changed
from django.dispatch import receiver
from requests import Response

from .scrub import scrub_response
from .suppression import Kept

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


#: DEFAULT_FROM_EMAIL, read once: Django's LazySettings costs ~0.5 us per attribute, and this
#: is needed on every message (read as a global: one call less on the warm send).
_platform_from: str | None = None


def _read_platform_from() -> str:
    global _platform_from
    _platform_from = str(settings.DEFAULT_FROM_EMAIL)
    return _platform_from


@receiver(setting_changed)
def _forget_platform_from(*, setting: str, **kwargs: object) -> None:
    global _platform_from
    if setting == "DEFAULT_FROM_EMAIL":
        _platform_from = None


def _changes(
    message: EmailMessage, defaults: Mapping[str, Any], trace: tuple[str, str] | None
) -> dict[str, object]:
    """The attributes to set on this message's copy; each value is a new object."""
    changes: dict[str, object] = {}
    default_meta: Any = None
    # One pass over the (few) defaults the tenant set, rather than a lookup per known key.
    for name, value in defaults.items():
        if name == "from_email":
            if value and message.from_email in (None, "", _platform_from or _read_platform_from()):
                changes["from_email"] = value
        elif name == "metadata":
            default_meta = value
        elif name == "reply_to":
            if value and not message.reply_to:
                changes["reply_to"] = [value] if isinstance(value, str) else list(value)
        elif name == "headers":
            present = {header.lower() for header in message.extra_headers}
            extra = {k: v for k, v in value.items() if k.lower() not in present}
            if extra:
                changes["extra_headers"] = {**extra, **message.extra_headers}
        elif name == "tags":
            if value:
                mine = list(_current(message, "tags") or [])
                changes["tags"] = mine + [t for t in value if t not in mine]
        elif name == "esp_extra":
            if value:
                changes["esp_extra"] = {**_thaw(value), **(_current(message, "esp_extra") or {})}
        elif name in ("track_opens", "track_clicks") and _current(message, name) is None:
            changes[name] = value
    own = getattr(message, "metadata", None)  # _current(), inlined: every tenant message
    if own is UNSET or not own:
        own = {}
    # {**own}: a non-mapping raises TypeError (dict.update would take a list of pairs).
    metadata: dict[str, Any] = {**_thaw(default_meta), **own} if default_meta else {**own}
    if trace is not None:  # the trace always wins: events are routed back by it
        metadata[trace[0]] = trace[1]
    if metadata:
        changes["metadata"] = metadata
    return changes


def copy_with(message: EmailMessage, changes: Mapping[str, object]) -> EmailMessage:
    """A shallow copy of ``message`` with ``changes`` set; it shares every other container."""
    cls = type(message)
    plain = _PLAIN_CLASSES.get(cls)
    if plain is None:
        # copy.copy costs ~5x more: only classes that customise copying or use slots need it.
        plain = _PLAIN_CLASSES[cls] = not any(
            "__copy__" in vars(klass)
            or "__reduce_ex__" in vars(klass)
            or "__slots__" in vars(klass)
            for klass in cls.__mro__[:-1]  # everything but object
        )
    if plain:
        copied = cls.__new__(cls)
        copied.__dict__ = {**message.__dict__, **changes}
    else:
        copied = copy.copy(message)
        copied.__dict__.update(changes)
    return copied


#: EmailMessage classes -> whether a plain __dict__ copy copies them faithfully.
_PLAIN_CLASSES: dict[type, bool] = {}


def prepare(
    messages: Sequence[EmailMessage], config: MailConfig
) -> tuple[list[EmailMessage], list[Copied]]:
    """What to send for ``messages`` under ``config``: copies where defaults apply.

    Returns the batch to hand to the inner backend, and what :func:`hand_back` needs. Everything
    that can fail (a message attribute of the wrong type, say) runs before anything is sent, and
    none of it touches the caller's objects. Recipients that suppression dropped
    (:class:`~tenantmail.suppression.Kept`) are left out of the copies, never out of the
    caller's messages.
    """
    kept = messages.recipients if isinstance(messages, Kept) else None
    tenant = config.tenant
    if tenant is None and not kept:
        return list(messages), []
    defaults, trace = config.defaults, config.trace
    outgoing: list[EmailMessage] = []
    copied: list[Copied] = []
    for message in messages:
        changes = _changes(message, defaults, trace) if tenant is not None else {}
        if kept:
            changes.update(kept.get(id(message), ()))
        if changes:
            clone = copy_with(message, changes)
            copied.append((message, clone, changes))
            outgoing.append(clone)
        else:
            outgoing.append(message)
    return outgoing, copied


def hand_back(outgoing: Sequence[EmailMessage], copied: Sequence[Copied]) -> None:
    """:func:`hand_back_one` for each message of a batch sent as ``outgoing``.

    Runs whether the send succeeded or not: a batch that failed on its 2nd message still reports
    the 1st one's status.
    """
    originals = {id(clone): (original, changes) for original, clone, changes in copied}
    for message in outgoing:
        original, changes = originals.get(id(message), (message, _NO_CHANGES))
        hand_back_one(original, message, changes)


_NO_CHANGES: Mapping[str, object] = MappingProxyType({})


def hand_back_one(
    original: EmailMessage, sent: EmailMessage, changes: Mapping[str, object]
) -> None:
    """Scrub the status the send left on ``sent`` (``original``'s copy, or ``original``), then
    give ``original`` what the send left on its copy, but never a default's value.

    Anymail leaves the ESP's response on ``anymail_status``, and through it the request with
    the credential: that is scrubbed in place (:func:`~tenantmail.scrub.scrub_response`) first,
    so the caller only ever sees the scrubbed object. An attribute the send (Anymail, a
    ``pre_send`` receiver, the test backend) replaced or added on the copy then goes back to the
    original, as it would have with a plain Anymail backend; the attributes the defaults set
    (``changes``) keep the caller's own values.
    """
    status = sent.__dict__.get("anymail_status")
    response = getattr(status, "esp_response", None)
    if isinstance(response, Response):
        scrub_response(response)
    if sent is not original:
        mine = original.__dict__.get
        for attr, value in sent.__dict__.items():
            if value is not mine(attr, _MISSING) and attr not in changes:
                original.__dict__[attr] = value
