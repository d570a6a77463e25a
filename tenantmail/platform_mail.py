"""Recognising Django's own server mail, which always leaves through the platform account.

``mail_admins()``, ``mail_managers()``, ``AdminEmailHandler`` (Django's ``DEFAULT_LOGGING``
installs one on the ``django`` logger, ``django.security.*`` included) and
``BrokenLinkEmailsMiddleware`` all send the same shape of message: from ``SERVER_EMAIL``, subject
starting with ``EMAIL_SUBJECT_PREFIX``, to the ``ADMINS`` or ``MANAGERS`` addresses and nobody
else. During a tenant's request they would otherwise go through that tenant's account -- with the
tenant's key and sending domain, and a stack trace of the platform inside. So
:class:`~tenantmail.backends.TenantBackend` sends messages of that shape as platform mail,
whatever tenant is active, and the rest of a mixed batch as usual.

The warm path pays one string comparison per message (``from_email`` against ``SERVER_EMAIL``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.signals import setting_changed
from django.dispatch import receiver

#: The settings the recognised shape is read from.
SHAPE_SETTINGS = frozenset({"SERVER_EMAIL", "EMAIL_SUBJECT_PREFIX", "ADMINS", "MANAGERS"})


@dataclass(frozen=True)
class _Shape:
    server_email: str
    subject_prefix: str
    staff: frozenset[str]  # ADMINS and MANAGERS addresses


_shape: _Shape | None = None


def _addresses(setting: str) -> set[str]:
    entries = getattr(settings, setting, None) or ()
    found: set[str] = set()
    for entry in entries:
        # Django 5.2 lists (name, address) pairs; 6.0 deprecates them for plain addresses.
        address = entry[1] if isinstance(entry, list | tuple) and len(entry) == 2 else entry
        found.add(str(address))
    return found


def _current_shape() -> _Shape:
    global _shape
    shape = _shape
    if shape is None:
        shape = _shape = _Shape(
            server_email=str(settings.SERVER_EMAIL),
            subject_prefix=str(settings.EMAIL_SUBJECT_PREFIX),
            staff=frozenset(_addresses("ADMINS") | _addresses("MANAGERS")),
        )
    return shape


def is_server_mail(message: EmailMessage) -> bool:
    """Is ``message`` one of Django's server messages (see the module docstring)?"""
    shape = _current_shape()
    if message.from_email != shape.server_email:
        return False
    recipients = message.recipients()
    return (
        bool(shape.staff)
        and bool(recipients)
        and str(message.subject).startswith(shape.subject_prefix)
        and all(address in shape.staff for address in recipients)
    )


def split_server_mail(
    messages: Sequence[EmailMessage],
) -> tuple[list[EmailMessage], Sequence[EmailMessage]]:
    """``(server mail, everything else)``; the input itself as the latter if nothing matched."""
    server_email = (_shape or _current_shape()).server_email
    for message in messages:
        if message.from_email == server_email:
            break
    else:
        return [], messages
    server: list[EmailMessage] = []
    others: list[EmailMessage] = []
    for message in messages:
        (server if is_server_mail(message) else others).append(message)
    return server, others


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    global _shape
    if setting in SHAPE_SETTINGS:
        _shape = None
