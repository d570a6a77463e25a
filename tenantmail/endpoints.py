"""What the platform allows a tenant's own endpoint to do to it.

A tenant chooses where its mail goes: an ESP's ``api_url``, an SMTP host and port. That makes
every tenant account a request the *platform* sends to an address a tenant picked, so each inner
backend built for a tenant account (never the platform's own) is hardened here:

* **Timeouts.** Every connection has a bounded connect and read timeout: the tenant's own
  ``timeout`` / ``requests_timeout``, else ``TENANTMAIL["TIMEOUT"]``, never above
  ``TENANTMAIL["MAX_TIMEOUT"]`` -- a host that accepts TCP and never answers must not pin the
  sending thread.
* **No redirects.** An ``api_url`` answering 302 would make the platform request any address,
  internal ones included; tenant sessions follow none (``max_redirects = 0``).
* **No response bodies in errors.** What a tenant-chosen host answers may be an internal service's
  page; Anymail quotes response bodies in its error messages, which tenants see. For tenant
  ``api_url`` endpoints the error keeps its type and status code, not the body.
* **Optionally no private destinations.** With ``TENANTMAIL["BLOCK_PRIVATE_ENDPOINTS"]`` the
  address a tenant connection actually connected to -- after DNS, before a byte is sent -- must
  be a public one: no loopback, private, link-local, shared or reserved ranges.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import smtplib
from collections.abc import Callable, Mapping
from typing import Any

from anymail.backends.base_requests import AnymailRequestsBackend
from anymail.exceptions import AnymailError
from django.core.mail.backends import smtp as django_smtp
from django.core.mail.backends.base import BaseEmailBackend
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .conf import TenantMailSettings
from .config import MailConfig
from .exceptions import TenantMailConfigurationError
from .smtp import EmailBackend as SMTPBackend

logger = logging.getLogger("tenantmail.endpoints")

PeerCheck = Callable[[str], None]


class BlockedEndpointError(TenantMailConfigurationError):
    """A tenant endpoint resolved to an address ``BLOCK_PRIVATE_ENDPOINTS`` refuses."""


# -- timeouts ------------------------------------------------------------------------------------


def tenant_options(
    cls: type[BaseEmailBackend],
    options: Mapping[str, Any],
    config: MailConfig,
    s: TenantMailSettings,
) -> dict[str, Any]:
    """``options`` with the bounded timeout the backend ``cls`` understands."""
    bounded = dict(options)
    if issubclass(cls, django_smtp.EmailBackend):
        # Before Django 6.1 a None timeout reads the platform's EMAIL_TIMEOUT; on 6.1 it is none.
        bounded["timeout"] = _bounded_timeout(bounded.get("timeout"), "timeout", config, s)
    elif issubclass(cls, AnymailRequestsBackend):
        # Anymail takes "timeout" over "requests_timeout", and without either reads the
        # platform's ANYMAIL["REQUESTS_TIMEOUT"]: the tenant gets its own, bounded.
        timeout = bounded.pop("timeout", None)
        requests_timeout = bounded.pop("requests_timeout", None)
        if timeout is not None:
            bounded["timeout"] = _bounded_timeout(timeout, "timeout", config, s)
        else:
            bounded["timeout"] = _bounded_timeout(requests_timeout, "requests_timeout", config, s)
    return bounded


def _bounded_timeout(value: object, name: str, config: MailConfig, s: TenantMailSettings) -> float:
    if value is None:
        return s.timeout
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise TenantMailConfigurationError(
            f"{name!r} must be a positive number of seconds (at most "
            f'TENANTMAIL["MAX_TIMEOUT"] = {s.max_timeout:g}); leave it out for the platform '
            f"default of {s.timeout:g}",
            tenant=config.tenant,
            setting=config.setting_name,
        )
    return float(min(value, s.max_timeout))


# -- hardening a built backend -------------------------------------------------------------------


def harden(backend: BaseEmailBackend, config: MailConfig, s: TenantMailSettings) -> None:
    """Apply the endpoint policy to a tenant account's freshly built (unopened) backend."""
    check = destination_check(config) if s.block_private_endpoints else None
    if isinstance(backend, SMTPBackend):
        backend.peer_check = check
        backend.open = functools.partial(_smtp_scrubbed, backend.open)  # type: ignore[method-assign]
        backend._send = functools.partial(_smtp_scrubbed, backend._send)  # type: ignore[method-assign]
    elif isinstance(backend, AnymailRequestsBackend):
        # Instance attributes shadow the class's methods for this one backend only.
        backend.create_session = functools.partial(_hardened_session, backend.create_session, check)
        if config.options.get("api_url"):
            backend._send = functools.partial(_send_scrubbed, backend._send)


def _hardened_session(create_session: Callable[[], Any], check: PeerCheck | None) -> Any:
    session = create_session()
    session.max_redirects = 0  # a redirect raises TooManyRedirects instead of being followed
    if check is not None:
        adapter = GuardedAdapter(check)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


def _send_scrubbed(send: Callable[[Any], bool], message: Any) -> bool:
    try:
        return send(message)
    except AnymailError as error:
        scrub_response(error)
        raise


def _smtp_scrubbed(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except smtplib.SMTPException as error:
        scrub_smtp_reply(error)
        raise


#: Stands in for a reply that was not SMTP: what some other service on that port answered.
WITHHELD_REPLY = b"(not an SMTP reply; withheld: the tenant chose this host)"


def _is_smtp_code(code: int) -> bool:
    return 200 <= code < 600


def scrub_smtp_reply(error: smtplib.SMTPException) -> None:
    """Keep what a non-SMTP service at a tenant-chosen host:port answered (Redis, an internal
    HTTP API, ...) out of the error; real SMTP replies -- ``535 5.7.8 ...`` -- stay."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        error.recipients = {
            address: (code, reply if _is_smtp_code(code) else WITHHELD_REPLY)
            for address, (code, reply) in error.recipients.items()
        }
        error.args = (error.recipients,)
    elif isinstance(error, smtplib.SMTPResponseException):
        code = error.smtp_code
        if not _is_smtp_code(code):
            error.smtp_error = WITHHELD_REPLY
            error.args = (code, WITHHELD_REPLY, *error.args[2:])


def _withheld(esp_name: str | None, status_code: int | None) -> str:
    return (
        f"{esp_name or 'ESP'} API response {status_code} (the response body is withheld: the "
        "tenant chose this endpoint)"
    )


def scrub_response(error: AnymailError) -> None:
    """Keep a tenant-chosen host's answer out of ``str(error)``; the type stays Anymail's."""
    if error.response is None and error.status_code is None:
        return  # e.g. "Error posting to <url>": a connection error, no answer to hide
    status = error.status_code
    # A partial of a module-level function, not a lambda: the error must stay picklable.
    error.describe_response = functools.partial(_withheld, error.esp_name, status)
    # Some backends quote parts of the body in the message itself (Postmark's "Message").
    error.args = (f"{error.esp_name or 'ESP'} API error",)


# -- private destinations ------------------------------------------------------------------------


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private (RFC 1918,
    ULA), link-local, shared (CGNAT), reserved, multicast and unspecified ones."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


def destination_check(config: MailConfig) -> PeerCheck:
    """A check of the peer address a tenant connection connected to."""
    tenant = config.tenant

    def check(address: str) -> None:
        if is_public_address(address):
            return
        # The address goes to the platform's log, never into the error a tenant may see.
        logger.warning(
            "tenantmail: refused tenant %r's endpoint: it connected to the non-public address "
            '%s (TENANTMAIL["BLOCK_PRIVATE_ENDPOINTS"] is on)',
            tenant,
            address,
        )
        raise BlockedEndpointError(
            "the mail endpoint (api_url or SMTP host) resolves to a private, loopback or "
            'link-local address, which TENANTMAIL["BLOCK_PRIVATE_ENDPOINTS"] refuses for tenant '
            "accounts; use the ESP's public endpoint or a public SMTP host",
            tenant=tenant,
            setting="mail_options",
        )

    return check


def _guarded(connection_class: type[HTTPConnection], check: PeerCheck) -> type[HTTPConnection]:
    def _new_conn(self: HTTPConnection) -> Any:
        sock = connection_class._new_conn(self)
        try:
            check(sock.getpeername()[0])
        except BaseException:
            sock.close()
            raise
        return sock

    name = f"Guarded{connection_class.__name__}"
    return type(name, (connection_class,), {"_new_conn": _new_conn})


class GuardedAdapter(HTTPAdapter):
    """requests adapter whose connections check the peer address right after connecting,
    before TLS and before any request bytes: DNS answers cannot slip an internal address in
    between a check and the connect."""

    def __init__(self, check: PeerCheck, **kwargs: Any) -> None:
        self._check = check
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = _guarded(HTTPConnection, self._check)
        https = _guarded(HTTPSConnection, self._check)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
