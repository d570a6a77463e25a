"""``TenantBackend``: the Django mail backend users configure.

It holds no policy: it wires *who* (tenancy), *what* (config), *how* (pool) and *send*, so
each of those can be tested and replaced alone.
"""

from __future__ import annotations

import logging
import smtplib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.views.decorators.debug import sensitive_variables

from . import platform_mail, signals
from . import pool as pool_module
from .config import MailConfig, resolve
from .defaults import Copied, _changes, copy_with, hand_back, hand_back_one, prepare
from .factory import build_backend
from .fastpath import lookup as fast_lookup
from .invalidation import forget_tenant
from .platform_mail import split_server_mail
from .pool import get_pool
from .scrub import scrub_error
from .suppression import enforce as enforce_suppression
from .tenancy import TenantLike, current_tenant

logger = logging.getLogger("tenantmail")


class TenantBackend(BaseEmailBackend):
    """Sends through the active tenant's own ESP account, or the platform's.

    ``tenant=`` pins the tenant (instance or schema name); every other keyword overrides the
    resolved backend options for this connection, e.g. ``api_key=``. The tenant is resolved when
    messages are sent, not here, so one instance can serve many requests.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        tenant: TenantLike = None,
        alias: str | None = None,
        **overrides: Any,
    ) -> None:
        # Django 6.1's get_connection(**kwargs) shim marks its kwargs with this; they are ours.
        overrides.pop("_ignore_unknown_kwargs", None)
        # fail_silently is handled here, never passed on: Anymail deprecates it and Django 6.1
        # would report it as an unknown option.
        super().__init__(alias=alias)
        self.alias = alias
        self.fail_silently = fail_silently
        self.tenant = tenant
        self.overrides = overrides

    def __repr__(self) -> str:
        return (
            f"<TenantBackend alias={self.alias!r} tenant={_tenant_label(self.tenant)!r} "
            f"overrides={sorted(self.overrides)!r}>"
        )

    def resolve(self) -> MailConfig:
        """The config the next send would use (handy in shells and tests)."""
        try:
            return resolve(current_tenant(self.tenant), self.overrides)
        except BaseException as exc:
            # Resolution's frames hold the decrypted options (and the cache key made of them).
            scrub_error(exc, sys._getframe(), {})
            raise

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        if self.tenant is None and not self.overrides and len(email_messages) == 1:
            sent = _send_warm(self, email_messages[0])
            if sent is not None:
                return sent
        # Django's own server mail (mail_admins, error reports, broken links) is platform mail
        # whatever tenant is active: never the tenant's key, domain or From.
        server_mail, email_messages = split_server_mail(email_messages)
        sent = 0
        if server_mail:
            sent += self._send(resolve(None), server_mail)
        if email_messages:
            # This thread's last resolution, if nothing it depended on changed (fastpath.py).
            config = fast_lookup() if self.tenant is None and not self.overrides else None
            if config is None:
                # Resolution errors are configuration errors: always raised, even when failing
                # silently. (self.resolve(), inlined: one call less on every send.)
                try:
                    config = resolve(current_tenant(self.tenant), self.overrides)
                except BaseException as exc:
                    scrub_error(exc, sys._getframe(), {})
                    raise
            sent += self._send(config, email_messages)
        return sent

    def _send(self, config: MailConfig, email_messages: Sequence[EmailMessage]) -> int:
        email_messages = enforce_suppression(config, email_messages)  # no-op unless enabled
        if signals.pre_send.receivers:  # building the keyword arguments costs, on every send
            signals.pre_send.send(
                sender=TenantBackend,
                tenant=config.tenant,
                config=config,
                backend=self,
                messages=email_messages,
            )
        sent = 0
        error: BaseException | None = None
        try:
            sent = _deliver(config, email_messages)
        except BaseException as exc:
            error = exc
            if not self._swallowed(exc, config):
                raise
        finally:
            if signals.post_send.receivers:
                signals.post_send.send(
                    sender=TenantBackend,
                    tenant=config.tenant,
                    config=config,
                    backend=self,
                    messages=email_messages,
                    sent=sent,
                    error=error,
                )
            # Break the frame <-> traceback cycle: a swallowed error holds the ESP response
            # (and its socket) until the cyclic GC runs otherwise.
            error = None
        if logger.isEnabledFor(logging.DEBUG):
            _log_sent(config, email_messages, sent)
        return sent

    def _swallowed(self, exc: BaseException, config: MailConfig) -> bool:
        """A send raised ``exc``: note it; True if it fails silently (else the caller raises)."""
        _annotate(exc, config)
        if config.own_account and _is_auth_failure(exc):
            # The key was probably rotated elsewhere: forget the cached row and connections
            # so the next send reads the new one instead of waiting out the cache.
            forget_tenant(str(config.tenant))
        # fail_silently covers sending errors only: never configuration errors, and never
        # KeyboardInterrupt/SystemExit (a worker's SIGTERM handler mid-send).
        if (
            not self.fail_silently
            or not isinstance(exc, Exception)
            or isinstance(exc, ImproperlyConfigured)
        ):
            return False
        logger.warning("tenantmail: sending for tenant %r failed silently: %s", config.tenant, exc)
        return True


def _log_sent(config: MailConfig, messages: Sequence[EmailMessage], sent: int) -> None:
    logger.debug(
        "tenantmail: sent %d of %d message(s) for tenant %r via %s",
        sent,
        len(messages),
        config.tenant,
        config.backend,
    )


# Hides every local variable of this frame *and of every frame it calls* (Anymail's request
# params, requests' auth headers, an SMTP password) from Django's error reports and the mail
# AdminEmailHandler sends; our own frames above only hold masked objects. (With DEBUG on Django
# ignores this, so scrub_error also clears those frames' locals before the error leaves.)
@sensitive_variables()
def _deliver(config: MailConfig, messages: Sequence[EmailMessage]) -> int:
    copied: list[Copied] = []
    outgoing: Sequence[EmailMessage] = messages
    try:
        # Before checkout: a message that cannot take the defaults costs no connection.
        outgoing, copied = prepare(messages, config)
        if not outgoing:  # suppression dropped every message: nothing to open a connection for
            return 0
        pool = pool_module._pool or get_pool()  # (one call less on every send)
        # Opening (an SMTP connect, say) is part of sending: its errors are annotated and
        # honour fail_silently like any other send error. take/park: this thread's connection
        # for its last key, kept for its next send (pool.py).
        conn = pool.take(config.pool_key, lambda: build_backend(config))
        try:
            sent = conn.backend.send_messages(outgoing) or 0
        except BaseException:
            pool.checkin(conn, discard=True)
            raise
        pool.park(conn)
        return int(sent)
    except BaseException as exc:
        scrub_error(exc, sys._getframe(), {id(clone): original for original, clone, _ in copied})
        raise
    finally:
        hand_back(outgoing, copied)


def _send_warm(backend: TenantBackend, message: EmailMessage) -> int | None:
    """The warm send, or None: then the general path (send_messages) sends, and decides.

    A web worker's thread sends one message at a time, request after request, for the tenant
    on its database connection, with no hook in use. That send runs between two of the inner
    backend's payload builds, with the CPU's caches cold, so every function entered and object
    read costs cache misses (BENCHMARKS.md, row 6). This does the general path's work for that
    case in fewer frames: the same lookup (fastpath.lookup), _deliver for one message, and the
    same error handling. It applies only when the general path would do nothing more: no server
    mail, no suppression, no pre_send/post_send receiver.
    """
    config = fast_lookup()
    shape = platform_mail._shape  # None until the general path first read it
    if (
        config is None
        or shape is None
        or message.from_email == shape.server_email  # might be server mail: split it
        or config.suppression != "off"
        or signals.pre_send.receivers
        or signals.post_send.receivers
    ):
        return None
    try:
        sent = _deliver_one(config, message)
    except BaseException as exc:
        if not backend._swallowed(exc, config):
            raise
        return 0
    if logger.isEnabledFor(logging.DEBUG):
        _log_sent(config, (message,), sent)
    return sent


@sensitive_variables()  # as _deliver's
def _deliver_one(config: MailConfig, message: EmailMessage) -> int:
    """:func:`_deliver` for one message: the same steps, without prepare()'s lists."""
    changes: Mapping[str, object] = {}
    clone = message
    try:
        if config.tenant is not None:
            changes = _changes(message, config.defaults, config.trace)
            if changes:
                clone = copy_with(message, changes)
        pool = pool_module._pool or get_pool()
        # pool.take(), without its frame: this thread's parked connection, else a checkout.
        conn = pool.take_parked(config.pool_key) or pool.checkout(
            config.pool_key, lambda: build_backend(config)
        )
        try:
            sent = conn.backend.send_messages([clone]) or 0
        except BaseException:
            pool.checkin(conn, discard=True)
            raise
        pool.park(conn)
        return int(sent)
    except BaseException as exc:
        scrub_error(exc, sys._getframe(), {id(clone): message})
        raise
    finally:
        hand_back_one(message, clone, changes)


def _is_auth_failure(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return True
    return getattr(exc, "status_code", None) in (401, 403)


def _annotate(exc: BaseException, config: MailConfig) -> None:
    account = "tenant account" if config.own_account else "platform account"
    if config.parent_setting is not None:  # sub-account mode: a 401 means the parent's key
        account = f"sub-account, with the parent credential in {config.parent_setting}"
    exc.add_note(
        f"tenantmail: while sending for tenant {config.tenant!r} via {config.backend} ({account})"
    )


def _tenant_label(tenant: TenantLike) -> str | None:
    if tenant is None or isinstance(tenant, str):
        return tenant
    return str(getattr(tenant, "schema_name", type(tenant).__name__))
