"""Django's SMTP backend, made safe to keep open between sends.

Django's own backend opens a session per ``send_messages()`` call, so a server that hangs up after
each message, or after a second of idleness, never troubles it. A pooled session meets both: the
next send finds the session already dead and fails with ``SMTPServerDisconnected``, where the
unpooled backend would have delivered. This subclass, which the factory builds in place of
Django's, keeps the pooled behaviour as reliable as the unpooled one:

* before a reused session carries a message, a non-blocking poll of its socket notices a server
  that already hung up (end of stream) or said goodbye (an unsolicited ``421``), and reconnects;
* a message that still fails on a *reused* session before the server acknowledged ``MAIL FROM``
  is sent once more on a fresh session. Nothing the server could have accepted is ever retried:
  once ``MAIL FROM`` was acknowledged, any error is the caller's.

It also carries the per-tenant endpoint policy (:mod:`tenantmail.endpoints`): the address the
socket actually connected to is checked before a single byte -- or credential -- is sent.
"""

from __future__ import annotations

import functools
import select
import smtplib
import socket
from collections.abc import Callable
from typing import Any

from django.core.mail.backends import smtp as django_smtp

#: The classes smtplib had when this module was imported. If a test patches ``smtplib.SMTP``,
#: the patched object is used as is -- the test must reach it, as it would without tenantmail.
_SMTP, _SMTP_SSL = smtplib.SMTP, smtplib.SMTP_SSL

#: Called with the peer IP address right after connecting; raises to refuse the destination.
PeerCheck = Callable[[str], None]


class _CheckedConnect(smtplib.SMTP):
    """Checks the peer address on the raw socket: before TLS (SMTP_SSL) and before EHLO."""

    peer_check: PeerCheck | None = None

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        if self.peer_check is not None:
            try:
                self.peer_check(sock.getpeername()[0])
            except BaseException:
                sock.close()
                raise
        return sock


class _TrackingMixin:
    """Records whether the server acknowledged ``MAIL FROM`` for the message in flight."""

    mail_acknowledged = False

    def __init__(self, *args: Any, peer_check: PeerCheck | None = None, **kwargs: Any) -> None:
        self.peer_check = peer_check  # before super().__init__(), which connects
        super().__init__(*args, **kwargs)

    def sendmail(self, *args: Any, **kwargs: Any) -> Any:
        self.mail_acknowledged = False
        return super().sendmail(*args, **kwargs)  # type: ignore[misc]

    def mail(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, response = super().mail(*args, **kwargs)  # type: ignore[misc]
        self.mail_acknowledged = code == 250
        return code, response


class TrackingSMTP(_TrackingMixin, _CheckedConnect):
    pass


# MRO: SMTP_SSL._get_socket wraps what _CheckedConnect._get_socket returns, already checked.
class TrackingSMTP_SSL(_TrackingMixin, smtplib.SMTP_SSL, _CheckedConnect):
    pass


def peer_hung_up(connection: smtplib.SMTP) -> bool:
    """True if the server already closed the session, or sent something unasked (a ``421``
    goodbye): either way it cannot carry the next message. Never blocks."""
    sock = connection.sock
    if sock is None:
        return True
    if not hasattr(select, "poll"):  # pragma: no cover  (Windows; the retry still covers it)
        return False
    # poll(), not recv(MSG_PEEK): a socket with a timeout waits for data inside recv(). Between
    # two messages the server has nothing to say, so anything readable -- end of stream, a
    # "421" goodbye, an error -- means this session cannot carry the next one.
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def died_before_mail_from(connection: smtplib.SMTP, error: BaseException) -> bool:
    """The session was dead before the server acknowledged MAIL FROM: nothing was accepted."""
    if getattr(connection, "mail_acknowledged", True):
        return False
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return True
    # "421 closing connection" in answer to MAIL FROM: smtplib closes and raises this.
    return isinstance(error, smtplib.SMTPSenderRefused) and error.smtp_code == 421


class EmailBackend(django_smtp.EmailBackend):
    """Django's SMTP backend that survives servers dropping a pooled session (see module doc)."""

    #: Set by the factory for tenant endpoints when ``BLOCK_PRIVATE_ENDPOINTS`` is on.
    peer_check: PeerCheck | None = None
    #: True from open() until the session carried its first message.
    _fresh = False
    retries = 0  #: messages re-sent on a fresh session (read by tests)

    @property
    def connection_class(self) -> Any:
        base = super().connection_class
        if base is _SMTP:
            return functools.partial(TrackingSMTP, peer_check=self.peer_check)
        if base is _SMTP_SSL:
            return functools.partial(TrackingSMTP_SSL, peer_check=self.peer_check)
        return base  # patched (a test's mock): used untouched

    def open(self) -> bool | None:
        opened = super().open()
        if opened:
            self._fresh = True
        return opened

    def _send(self, email_message: Any) -> bool:
        connection = self.connection
        reused = not self._fresh
        self._fresh = False
        if connection is None or not isinstance(connection, TrackingSMTP | TrackingSMTP_SSL):
            return bool(super()._send(email_message))  # type: ignore[misc]
        if reused and peer_hung_up(connection):
            self._reconnect()
            reused = False
        try:
            return bool(super()._send(email_message))  # type: ignore[misc]
        except smtplib.SMTPException as error:
            if not (reused and died_before_mail_from(connection, error)):
                raise
        self._reconnect()
        self.retries += 1
        return bool(super()._send(email_message))  # type: ignore[misc]

    def _reconnect(self) -> None:
        try:
            self.close()
        except (smtplib.SMTPException, OSError):  # pragma: no cover  (QUIT refused: rare)
            self.connection = None  # it is gone either way
        self.open()
        self._fresh = False
