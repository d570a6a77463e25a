"""A message <-> JSON, with full fidelity, refusing (at enqueue) whatever cannot round-trip.

The message's own attributes are stored (``vars(message)``), each value tagged when JSON has no
type for it: tuples, named tuples (Django's ``EmailAttachment``/``EmailAlternative``), bytes,
datetimes, Anymail's ``UNSET``, and MIME parts (``MIMEBase`` or ``MIMEPart``, stored as bytes).
Every dict is wrapped, so a user's dict can never be mistaken for a tag. The class is stored by
dotted path and must be importable: a worker rebuilds the same class without calling
``__init__`` (as pickle does), so a subclass with a custom constructor round-trips too.
"""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
from email.message import Message, MIMEPart
from email.mime.base import MIMEBase
from typing import Any

from django.core.mail import EmailMessage
from django.utils.functional import Promise
from django.utils.module_loading import import_string

from .exceptions import UnstorableMessageError

FORMAT = 1

#: Runtime state, not content: recreated empty by the worker.
_RUNTIME_ATTRS = frozenset({"connection", "_connection", "anymail_status"})


class _StoredMIMEBase(MIMEBase):
    """A parsed legacy MIME part that is still a ``MIMEBase`` (what Django and Anymail check)."""

    def __init__(self, *, policy: Any = None) -> None:
        Message.__init__(self, policy=policy or email.policy.compat32)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _importable(cls: type, where: str) -> str:
    path = _class_path(cls)
    try:
        found = import_string(path) if "<locals>" not in path else None
    except ImportError:
        found = None
    if found is not cls:
        raise UnstorableMessageError(
            f"{where}: class {path} cannot be imported by a worker; define it at module level"
        )
    return path


def _unset() -> object:
    try:
        from anymail.utils import UNSET
    except ImportError:  # pragma: no cover - anymail is a dependency
        return None
    return UNSET


def encode(value: Any, where: str) -> Any:
    """A JSON-ready form of ``value``; ``where`` names it in errors (``message.attachments[0]``)."""
    if value is None or isinstance(value, bool | int | str):
        # Subclasses (SafeString, IntEnum) are stored as their plain base value.
        if isinstance(value, bool) or value is None:
            return value
        return int(value) if isinstance(value, int) else str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnstorableMessageError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, Promise):  # gettext_lazy: render now, as sending would
        return str(value)
    if value is _unset():
        return {"__unset__": True}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise UnstorableMessageError(f"{where}: dict keys must be strings")
        return {"__dict__": {k: encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
    if isinstance(value, tuple):
        items = [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if hasattr(type(value), "_fields"):
            return {"__namedtuple__": _importable(type(value), where), "items": items}
        return {"__tuple__": items}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"__date__": value.isoformat()}
    if isinstance(value, MIMEPart | MIMEBase):
        kind = "mimepart" if isinstance(value, MIMEPart) else "mimebase"
        return {"__mime__": kind, "data": base64.b64encode(value.as_bytes()).decode("ascii")}
    raise UnstorableMessageError(
        f"{where}: a {type(value).__name__} cannot be stored in the outbox; use plain data "
        "(str, numbers, lists, dicts with string keys, bytes, datetimes, MIME parts)"
    )


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__dict__" in value:
        return {k: decode(v) for k, v in value["__dict__"].items()}
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__namedtuple__" in value:
        return import_string(value["__namedtuple__"])(*(decode(v) for v in value["items"]))
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__datetime__" in value:
        return datetime.datetime.fromisoformat(value["__datetime__"])
    if "__date__" in value:
        return datetime.date.fromisoformat(value["__date__"])
    if "__unset__" in value:
        return _unset()
    if "__mime__" in value:
        data = base64.b64decode(value["data"])
        if value["__mime__"] == "mimepart":
            return email.message_from_bytes(data, policy=email.policy.default)
        return email.message_from_bytes(data, _class=_StoredMIMEBase)
    raise ValueError(f"unknown stored value {sorted(value)}")


def dump(message: EmailMessage) -> dict[str, Any]:
    """The message as JSON-ready data; raises :class:`UnstorableMessageError` naming the part."""
    if not isinstance(message, EmailMessage):
        raise UnstorableMessageError(
            f"expected a django.core.mail.EmailMessage, got {type(message).__name__}"
        )
    attrs = {
        name: encode(value, f"message.{name}")
        for name, value in vars(message).items()
        if name not in _RUNTIME_ATTRS
    }
    runtime = sorted(name for name in vars(message) if name in _RUNTIME_ATTRS)
    return {
        "format": FORMAT,
        "class": _importable(type(message), "message"),
        "attrs": attrs,
        "runtime": runtime,
    }


def load(data: dict[str, Any]) -> EmailMessage:
    """Rebuild the message :func:`dump` stored (same class, same attributes)."""
    if data.get("format") != FORMAT:
        raise ValueError(f"unsupported outbox payload format {data.get('format')!r}")
    cls = import_string(data["class"])
    message: EmailMessage = cls.__new__(cls)
    for name in data.get("runtime", ()):
        if name == "anymail_status":
            from anymail.message import AnymailStatus

            setattr(message, name, AnymailStatus())
        else:
            setattr(message, name, None)
    for name, value in data["attrs"].items():
        setattr(message, name, decode(value))
    return message
