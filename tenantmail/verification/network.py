"""The connect and TLS stages, shared by every transport: a TCP connection under the endpoint
rules (timeout, ``BLOCK_PRIVATE_ENDPOINTS`` on the address actually connected to), then a TLS
handshake that checks the certificate against the host name, as the real send would."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from ..exceptions import TenantMailConfigurationError
from .report import StageFailed

PeerCheck = Callable[[str], None]


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(error: OSError, timeout: float) -> str:
    if isinstance(error, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(error, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or type(error).__name__


def connect(host: str, port: int, timeout: float, check: PeerCheck | None) -> socket.socket:
    """A connected socket to ``host:port``, its peer address checked; StageFailed if not."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        raise StageFailed(
            f"cannot connect to {where(host, port)}: {_why(error, timeout)}"
        ) from None
    if check is not None:
        try:
            check(sock.getpeername()[0])
        except TenantMailConfigurationError as error:
            sock.close()
            raise StageFailed(str(error)) from None
    return sock


def handshake(sock: socket.socket, context: ssl.SSLContext, host: str, port: int) -> ssl.SSLSocket:
    """``sock`` wrapped in TLS, the certificate checked for ``host``; StageFailed if not."""
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as error:
        sock.close()
        raise StageFailed(
            f"TLS failed at {where(host, port)}: the certificate is not valid for {host} "
            f"({error.verify_message})"
        ) from None
    except (ssl.SSLError, OSError) as error:
        sock.close()
        reason = getattr(error, "reason", None) or type(error).__name__
        raise StageFailed(f"TLS handshake with {where(host, port)} failed ({reason})") from None
