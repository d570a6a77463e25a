"""Loopback fakes of the far side of the network, for tests, demos and benchmarks.

``FakeESP`` speaks just enough of the Mailgun, Postmark, SendGrid v3, SparkPost and
Amazon SES v2 (raw ``SendEmail``) send APIs for django-anymail's *real* backends
to talk to it over real HTTP(S), and
``FakeSMTP`` is a real SMTP server for Django's SMTP backend. Both record every
accepted message together with the credential it was sent with, which is what
lets a test prove that tenant A's mail really went out with tenant A's key.

Everything binds to 127.0.0.1 on an ephemeral port. Credentials are recorded
verbatim (tests need to compare them) but are only ever *shown* masked::

    with FakeESP() as esp:
        backend = anymail.backends.mailgun.EmailBackend(
            alias="t", api_key=key, sender_domain="mg.example.com", api_url=esp.mailgun_api_url
        )
        backend.send_messages([message])
        assert esp.messages[0].credential == key

    with FakeSMTP() as smtp:  # point Django's SMTP backend at smtp.host / smtp.port
        ...
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import dataclasses
import hashlib
import http.server
import itertools
import json
import re
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .masking import mask

__all__ = ["FakeESP", "FakeSMTP", "ReceivedAttachment", "ReceivedMessage", "Route", "mask", "route"]

LOOPBACK = "127.0.0.1"
# Bounds how long stop() waits for handler threads; they are woken up
# explicitly, so this is only reached if something is badly stuck.
_JOIN_TIMEOUT = 5.0
# A client that connects but never completes the TLS handshake must not pin
# a handler thread forever.
_HANDSHAKE_TIMEOUT = 5.0
# serve_forever() only notices shutdown() between polls; short polls keep
# stop() (run once per test) fast at negligible idle cost.
_POLL_INTERVAL = 0.01


class ReceivedAttachment(NamedTuple):
    """One attachment as the fake received it (Mailgun and Postmark send APIs).

    ``content_type`` is the MIME type without parameters (no ``charset``). ``content_id`` is set
    for an inline part (Mailgun: the part's file name; Postmark: its ``ContentID`` without
    ``cid:``), else None. ``sha256`` is the hex digest of the bytes.
    """

    filename: str
    content_type: str
    size: int
    sha256: str
    content_id: str | None = None

    @classmethod
    def of(
        cls, filename: str, content_type: str, data: bytes, content_id: str | None = None
    ) -> ReceivedAttachment:
        return cls(filename, content_type, len(data), hashlib.sha256(data).hexdigest(), content_id)


@dataclasses.dataclass(frozen=True, repr=False)
class ReceivedMessage:
    """One message as the fake server accepted it.

    ``to`` holds every envelope recipient (to, cc and bcc) as bare addresses,
    and ``from_email`` is the bare sender address, so assertions don't depend
    on how each API formats display names. ``sender_domain`` is the domain in
    the Mailgun URL (None for the other APIs). ``received_at`` is
    ``time.time()`` when the request was handled.
    """

    esp: str
    credential: str
    sender_domain: str | None
    from_email: str
    to: list[str]
    subject: str
    metadata: dict[str, str]
    message_id: str
    connection_id: int
    received_at: float
    #: The sub-account the request was sent on behalf of: Mailgun's ``X-Mailgun-On-Behalf-Of``
    #: and SparkPost's ``X-MSYS-SUBACCOUNT`` *request* headers, SES v2's ``TenantName``; else None.
    on_behalf_of: str | None = None
    # What the message carried, recorded by the Mailgun and Postmark send APIs (the others leave
    # the defaults): so a test can check what a queue worker actually sent, not what it meant to.
    #: Bare addresses of each kind (``to`` above is every envelope recipient).
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    text: str = ""
    html: str = ""
    #: Custom headers as sent (Mailgun ``h:`` fields, Postmark ``Headers``), names as given.
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    attachments: tuple[ReceivedAttachment, ...] = ()
    tags: tuple[str, ...] = ()
    #: ``{"opens": bool, "clicks": bool}``, for what the request set explicitly.
    tracking: Mapping[str, bool] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        # Hand-written so the credential can never reach logs or pytest output
        # in clear; an empty credential ("no AUTH") is shown as such.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["credential"] = mask(self.credential) if self.credential else ""
        body = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"ReceivedMessage({body})"

    __str__ = __repr__


class _Recorder:
    """Thread-safe message/rejection log shared by both fakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[ReceivedMessage] = []
        self._rejected: list[tuple[str, int]] = []
        self._opened = 0
        self._conn_ids = itertools.count(1)

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot copy, so callers can iterate while servers keep writing."""
        with self._lock:
            return list(self._messages)

    @property
    def rejected(self) -> list[tuple[str, int]]:
        """``(esp, status)`` for each request answered with an error.

        Status 0 means the connection was reset without any response.
        """
        with self._lock:
            return list(self._rejected)

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._opened

    def clear(self) -> None:
        """Forget recorded messages, rejections and the connection count."""
        with self._lock:
            self._messages.clear()
            self._rejected.clear()
            self._opened = 0

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``n`` messages arrived; raise TimeoutError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} message(s), got {len(self._messages)} within {timeout}s"
                )
            return list(self._messages)

    def _new_connection(self) -> int:
        with self._lock:
            self._opened += 1
            return next(self._conn_ids)

    def _record(self, *messages: ReceivedMessage) -> None:
        with self._changed:
            self._messages.extend(messages)
            self._changed.notify_all()

    def _reject(self, esp: str, status: int) -> None:
        with self._lock:
            self._rejected.append((esp, status))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------- HTTP


class _Reply(NamedTuple):
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = {}


def _json_reply(status: int, payload: object, **headers: str) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), headers)


def _addr_specs(*fields: str | None) -> list[str]:
    """Bare addresses from header-style strings like ``"A <a@x>, b@y"``."""
    return [addr for _, addr in getaddresses([f for f in fields if f]) if addr]


def _basic_api_key(headers: Message[str, str]) -> str:
    """The key of HTTP basic auth with the fixed user name "api" (Mailgun's, Brevo's account
    API), or "" when the header is missing, malformed or names another user."""
    scheme, _, encoded = (headers.get("Authorization") or "").partition(" ")
    try:
        user, _, key = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return key if scheme.lower() == "basic" and user == "api" else ""


def _str_dict(value: object) -> dict[str, str]:
    """JSON metadata as ``dict[str, str]`` (ESPs stringify values anyway)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _parse_form(content_type: str, body: bytes) -> dict[str, list[str]]:
    """Decode requests' form body: urlencoded, or multipart with attachments."""
    if not content_type.startswith("multipart/form-data"):
        return parse_qs(body.decode(), keep_blank_values=True)
    # The email package parses multipart/form-data fine once it sees the
    # boundary header; this avoids the deprecated cgi module.
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    parsed = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, list[str]] = collections.defaultdict(list)
    for part in parsed.iter_parts() if isinstance(parsed, EmailMessage) else ():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and part.get_filename() is None:  # skip files
            raw = part.get_payload(decode=True)
            fields[name].append(raw.decode() if isinstance(raw, bytes) else "")
    return fields


def _form_files(content_type: str, body: bytes) -> list[tuple[str, ReceivedAttachment]]:
    """``(field name, attachment)`` for each file part of a multipart/form-data body."""
    if not content_type.startswith("multipart/form-data"):
        return []
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    parsed = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    files = []
    for part in parsed.iter_parts() if isinstance(parsed, EmailMessage) else ():
        name, filename = part.get_param("name", header="content-disposition"), part.get_filename()
        if isinstance(name, str) and filename is not None:
            data = part.get_payload(decode=True)
            data = data if isinstance(data, bytes) else b""
            cid = (
                filename if name == "inline" else None
            )  # Mailgun: an inline part's name is its cid
            files.append(
                (name, ReceivedAttachment.of(filename, part.get_content_type(), data, cid))
            )
    return files


def _mailgun_details(
    form: Mapping[str, list[str]], files: list[tuple[str, ReceivedAttachment]]
) -> dict[str, Any]:
    headers = {k[2:]: v[0] for k, v in form.items() if k.startswith("h:") and k != "h:Reply-To"}
    tracking = {
        kind: form[f"o:tracking-{kind}"][0] == "yes"
        for kind in ("opens", "clicks")
        if f"o:tracking-{kind}" in form
    }
    return {
        "cc": tuple(_addr_specs(*form.get("cc", []))),
        "bcc": tuple(_addr_specs(*form.get("bcc", []))),
        "reply_to": tuple(_addr_specs(*form.get("h:Reply-To", []))),
        "text": form.get("text", [""])[0],
        "html": form.get("html", [""])[0],
        "headers": headers,
        "attachments": tuple(a for field, a in files if field in ("attachment", "inline")),
        "tags": tuple(form.get("o:tag", [])),
        "tracking": tracking,
    }


def _postmark_details(item: Mapping[str, Any]) -> dict[str, Any]:
    attachments = tuple(
        ReceivedAttachment.of(
            str(a.get("Name", "")),
            str(a.get("ContentType", "")).partition(";")[0].strip(),  # the type, as Mailgun's
            base64.b64decode(a.get("Content", "")),
            str(a["ContentID"]).removeprefix("cid:") if a.get("ContentID") else None,
        )
        for a in item.get("Attachments") or []
    )
    tracking = {"opens": bool(item["TrackOpens"])} if "TrackOpens" in item else {}
    if "TrackLinks" in item:
        tracking["clicks"] = item["TrackLinks"] != "None"
    return {
        "cc": tuple(_addr_specs(item.get("Cc"))),
        "bcc": tuple(_addr_specs(item.get("Bcc"))),
        "reply_to": tuple(_addr_specs(item.get("ReplyTo"))),
        "text": item.get("TextBody") or "",
        "html": item.get("HtmlBody") or "",
        "headers": {h["Name"]: h["Value"] for h in item.get("Headers") or []},
        "attachments": attachments,
        "tags": (item["Tag"],) if item.get("Tag") else (),
        "tracking": tracking,
    }


class _Conn:
    """One accepted TCP connection; ``sock`` becomes the TLS socket once wrapped."""

    def __init__(self, conn_id: int, sock: socket.socket) -> None:
        self.id = conn_id
        self.raw = sock
        self.sock = sock
        self.abort = False
        self.thread: threading.Thread | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 so requests' connection pool keeps connections alive, which is
    # what makes connections_opened meaningful.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits
    # for the client's delayed ACK and every request stalls ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        self.conn = self.server.owner._adopt(self.request)
        self.request = self.conn.sock  # the TLS socket when tls=True
        super().setup()

    def handle_one_request(self) -> None:
        # Re-applied before every request so changing close_idle_after affects
        # live keep-alive connections; a timeout makes the base class close.
        self.connection.settimeout(self.server.owner.close_idle_after)
        super().handle_one_request()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            # The client died mid-request (a SIGKILLed worker): a real ESP never sees a request
            # it did not receive whole, so neither answer nor record it.
            self.close_connection = True
            return
        reply = self.server.owner._respond(
            self.command, self.path, self.headers, body, self.conn.id
        )
        if reply is None:
            self.conn.abort = True
            self.close_connection = True
            return
        self.send_response(reply.status)
        ctype = "application/json" if reply.body[:1] in (b"{", b"[") else "text/plain"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    # Routed like POST so fault injection and ``rejected`` see every request.
    do_GET = do_PUT = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; request lines are not interesting


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, owner: FakeESP) -> None:
        self.owner = owner
        super().__init__((LOOPBACK, 0), _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # Replaces ThreadingMixIn's version so every connection and its thread
        # are tracked: stop() needs them to close sockets and join threads.
        assert isinstance(request, socket.socket)
        conn = self.owner._register(request)
        conn.thread = threading.Thread(target=self._serve, args=(conn, client_address), daemon=True)
        conn.thread.start()

    def _serve(self, conn: _Conn, client_address: Any) -> None:
        try:
            self.finish_request(conn.raw, client_address)
        except Exception:
            self.handle_error(conn.raw, client_address)
        finally:
            self.owner._unregister(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Resets, timeouts and failed handshakes are routine for a fake that
        # gets stopped mid-connection; anything else is a bug worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError | ValueError):
            super().handle_error(request, client_address)


class Route(NamedTuple):
    """An extra endpoint of the fake (account, provisioning and verification APIs).

    ``handler(fake, match, headers, body, conn_id)`` builds the reply. Routes live in their own
    modules (registered with :func:`route`) so this module keeps to the send APIs.
    """

    method: str
    pattern: re.Pattern[str]
    handler: Callable[[FakeESP, re.Match[str], Message[str, str], bytes, int], _Reply]


#: Extra routes, tried before the send APIs; filled by :func:`route` at import.
ROUTES: list[Route] = []


def route(method: str, pattern: str) -> Callable[[Callable[..., _Reply]], Callable[..., _Reply]]:
    """Register ``handler`` for ``method`` requests whose path matches ``pattern`` (anchored)."""

    def register(handler: Callable[..., _Reply]) -> Callable[..., _Reply]:
        ROUTES.append(Route(method, re.compile(pattern), handler))
        return handler

    return register


_MAILGUN = re.compile(r"^/mailgun/v3/(?P<domain>[^/]+)/messages$")
_POSTMARK = re.compile(r"^/postmark/email(?P<kind>|/batch|/withTemplate/?|/batchWithTemplates)$")
_SENDGRID = re.compile(r"^/sendgrid/v3/mail/send$")
# SparkPost "Transmissions" (POST /api/v1/transmissions) and SES v2 "SendEmail"
# (POST /v2/email/outbound-emails), each under its own prefix of this server.
_SPARKPOST = re.compile(r"^/sparkpost/api/v1/transmissions/?$")
_SES = re.compile(r"^/amazon_ses/v2/email/outbound-emails$")
_SES_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
# What the real services answer on a missing or bad credential.
_POSTMARK_401 = {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."}
_SENDGRID_401 = {"errors": [{"field": None, "message": "authorization required"}]}


class FakeESP(_Recorder):
    """Threaded HTTP(S) server imitating the Mailgun, Postmark, SendGrid, SparkPost and SES APIs.

    Point each anymail backend's ``api_url`` at ``mailgun_api_url`` etc.
    Any non-empty credential is accepted unless ``valid_credentials`` is given.
    """

    def __init__(
        self, *, tls: bool = False, valid_credentials: Iterable[str] | None = None
    ) -> None:
        super().__init__()
        self.tls = tls
        self.valid_credentials = None if valid_credentials is None else set(valid_credentials)
        self.delay: float = 0.0
        self.close_idle_after: float | None = None
        self._faults: collections.deque[_Reply | None] = collections.deque()
        self._conns: dict[socket.socket, _Conn] = {}
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ssl: ssl.SSLContext | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._msg_ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FakeESP already started")
        if self.tls:
            self._setup_tls()
        self._stopping.clear()
        self._server = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": _POLL_INTERVAL}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and every client connection, then join."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            self._stopping.set()  # wakes delays; refuses late TLS wraps
            conns = list(self._conns.values())
            for conn in conns:
                # Base-class shutdown works on TLS sockets too and does not
                # touch SSL state the handler thread is still using.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(_JOIN_TIMEOUT)
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _setup_tls(self) -> None:
        import trustme  # only needed for tls=True

        ca = trustme.CA()
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(LOOPBACK, "localhost").configure_cert(self._ssl)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fakeesp-")
        ca.cert_pem.write_to_path(Path(self._tmpdir.name) / "ca.pem")

    # -- addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeESP is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}/"

    @property
    def mailgun_api_url(self) -> str:
        return f"{self.base_url}mailgun/v3/"

    @property
    def postmark_api_url(self) -> str:
        return f"{self.base_url}postmark/"

    @property
    def sendgrid_api_url(self) -> str:
        return f"{self.base_url}sendgrid/v3/"

    @property
    def sparkpost_api_url(self) -> str:
        return f"{self.base_url}sparkpost/api/v1/"

    @property
    def amazon_ses_endpoint_url(self) -> str:
        """For SES ``client_params={"endpoint_url": ...}`` (SendEmail with a raw message only)."""
        return f"{self.base_url}amazon_ses"

    @property
    def ca_bundle_path(self) -> str:
        """PEM file of the throwaway CA, for ``verify=`` / ``REQUESTS_CA_BUNDLE``."""
        if self._tmpdir is None:
            raise RuntimeError("ca_bundle_path needs FakeESP(tls=True), started")
        return str(Path(self._tmpdir.name) / "ca.pem")

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- fault injection ---------------------------------------------------

    def fail_next(
        self, status: int, body: str = '{"message": "injected failure"}', count: int = 1
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and record nothing."""
        with self._lock:
            self._faults.extend([_Reply(status, body.encode())] * count)

    def redirect_next(self, location: str, status: int = 302, count: int = 1) -> None:
        """Answer the next ``count`` requests with a redirect to ``location``, as a
        tenant-chosen endpoint pointing the platform at an internal address would."""
        with self._lock:
            self._faults.extend([_Reply(status, b"", {"Location": location})] * count)

    def reset_next(self, count: int = 1) -> None:
        """Drop the connection (TCP RST, no response) for the next ``count`` requests."""
        with self._lock:
            self._faults.extend([None] * count)

    def clear(self) -> None:
        """Also drops pending fail_next/reset_next faults."""
        super().clear()
        with self._lock:
            self._faults.clear()

    # -- connection bookkeeping (called from server threads) ---------------

    def _register(self, sock: socket.socket) -> _Conn:
        conn = _Conn(self._new_connection(), sock)
        with self._lock:
            self._conns[sock] = conn
        return conn

    def _adopt(self, raw: socket.socket) -> _Conn:
        """Look up the handler's connection, doing the TLS handshake if needed."""
        with self._lock:
            conn = self._conns[raw]
            if self._ssl is None:
                return conn
            if self._stopping.is_set():
                raise ConnectionAbortedError("FakeESP is stopping")
            # Wrap under the lock, handshake outside it: stop() then always
            # sees the socket object that actually owns the descriptor.
            conn.sock = self._ssl.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        conn.sock.settimeout(_HANDSHAKE_TIMEOUT)
        assert isinstance(conn.sock, ssl.SSLSocket)
        conn.sock.do_handshake()
        return conn

    def _unregister(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.pop(conn.raw, None)
        try:
            if conn.abort:
                # Linger 0 turns close() into an RST: the client sees a reset
                # connection, not a clean end of stream.
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                socket.socket.shutdown(conn.sock, socket.SHUT_WR)
        except OSError:
            pass
        conn.sock.close()
        conn.raw.close()

    # -- request handling --------------------------------------------------

    def _respond(
        self, method: str, path: str, headers: Message[str, str], body: bytes, conn_id: int
    ) -> _Reply | None:
        """Build the reply for one request; None means "reset the connection"."""
        if self.delay:
            self._stopping.wait(self.delay)
        path = urlsplit(path).path
        # Every API lives under a prefix named after its ESP: /mailgun/..., /brevo/...
        esp = path.split("/", 2)[1] if path.count("/") >= 2 else "unknown"
        with self._lock:
            faulted = bool(self._faults)
            fault = self._faults.popleft() if faulted else None
        if faulted:
            self._reject(esp, 0 if fault is None else fault.status)
            return fault
        try:
            reply = self._dispatch(method, path, headers, body, conn_id)
        except (ValueError, KeyError, TypeError, AttributeError):
            reply = _json_reply(400, {"message": "malformed request"})
        if reply.status >= 300:
            self._reject(esp, reply.status)
        return reply

    def _accepts(self, credential: str) -> bool:
        if self.valid_credentials is None:
            return bool(credential.strip())  # blank counts as missing
        return credential in self.valid_credentials

    def _dispatch(
        self, method: str, path: str, headers: Message[str, str], body: bytes, conn_id: int
    ) -> _Reply:
        for extra in ROUTES:
            if extra.method == method and (match := extra.pattern.match(path)):
                return extra.handler(self, match, headers, body, conn_id)
        if method != "POST":  # the send APIs are POST-only
            return _json_reply(404, {"message": "Not Found"})
        if match := _MAILGUN.match(path):
            return self._mailgun(unquote(match["domain"]), headers, body, conn_id)
        if match := _POSTMARK.match(path):
            return self._postmark(match["kind"], headers, body, conn_id)
        if _SENDGRID.match(path):
            return self._sendgrid(headers, body, conn_id)
        if _SPARKPOST.match(path):
            return self._sparkpost(headers, body, conn_id)
        if _SES.match(path):
            return self._amazon_ses(headers, body, conn_id)
        return _json_reply(404, {"message": "Not Found"})

    @staticmethod
    def _message(
        esp: str,
        credential: str,
        conn_id: int,
        domain: str | None,
        sender: str,
        to: list[str],
        subject: str,
        metadata: dict[str, str],
        message_id: str,
    ) -> ReceivedMessage:
        return ReceivedMessage(
            esp, credential, domain, sender, to, subject, metadata, message_id, conn_id, time.time()
        )

    def _mailgun(self, domain: str, headers: Message[str, str], body: bytes, conn: int) -> _Reply:
        key = _basic_api_key(headers)
        if not self._accepts(key):  # blank (no or malformed credential) is never accepted
            return _Reply(401, b"Forbidden")
        form = _parse_form(headers.get("Content-Type") or "", body)
        # anymail sends metadata as "v:key" fields; older clients use the header.
        metadata = _str_dict(json.loads(form.get("h:X-Mailgun-Variables", ["{}"])[0]))
        metadata.update({k[2:]: v[0] for k, v in form.items() if k.startswith("v:")})
        sender = next(iter(_addr_specs(*form.get("from", []))), "")
        to = _addr_specs(*form.get("to", []), *form.get("cc", []), *form.get("bcc", []))
        subject = form.get("subject", [""])[0]
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{next(self._msg_ids)}@{domain}>"
        received = self._message(
            "mailgun", key, conn, domain, sender, to, subject, metadata, message_id
        )
        # Mailgun's subaccount header is a request header (API reference, "Subaccounts").
        on_behalf_of = headers.get("X-Mailgun-On-Behalf-Of")
        details = _mailgun_details(form, _form_files(headers.get("Content-Type") or "", body))
        self._record(dataclasses.replace(received, on_behalf_of=on_behalf_of, **details))
        return _json_reply(200, {"id": message_id, "message": "Queued. Thank you."})

    def _postmark(self, kind: str, headers: Message[str, str], body: bytes, conn: int) -> _Reply:
        token = (headers.get("X-Postmark-Server-Token") or "").strip()
        if not self._accepts(token):
            return _json_reply(401, _POSTMARK_401)
        data = json.loads(body)
        batch = "batch" in kind
        items = (data["Messages"] if isinstance(data, dict) else data) if batch else [data]
        received, results = [], []
        for item in items:
            message_id = str(uuid.uuid4())
            sender = next(iter(_addr_specs(item.get("From"))), "")
            to = _addr_specs(item.get("To"), item.get("Cc"), item.get("Bcc"))
            metadata = _str_dict(item.get("Metadata"))
            subject = item.get("Subject") or ""
            received.append(
                dataclasses.replace(
                    self._message(
                        "postmark", token, conn, None, sender, to, subject, metadata, message_id
                    ),
                    **_postmark_details(item),
                )
            )
            # The fields anymail's postmark backend reads to decide success.
            results.append(
                {"To": item.get("To", ""), "SubmittedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
                | {"MessageID": message_id, "ErrorCode": 0, "Message": "OK"}
            )
        self._record(*received)
        return _json_reply(200, results if batch else results[0])

    def _sendgrid(self, headers: Message[str, str], body: bytes, conn: int) -> _Reply:
        scheme, _, key = (headers.get("Authorization") or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not self._accepts(key):
            return _json_reply(401, _SENDGRID_401)
        data = json.loads(body)
        x_message_id = uuid.uuid4().hex[:22]
        received = []
        # One message per personalization: that is how SendGrid (and anymail's
        # batch sending) fans a request out to separate recipients.
        for person in data["personalizations"]:
            metadata = _str_dict(data.get("custom_args")) | _str_dict(person.get("custom_args"))
            # anymail generates its message id client-side and sends it as a custom arg.
            message_id = metadata.pop("anymail_id", x_message_id)
            to = [r["email"] for kind in ("to", "cc", "bcc") for r in person.get(kind, [])]
            subject = person.get("subject", data.get("subject", ""))
            sender = data["from"]["email"]
            received.append(
                self._message(
                    "sendgrid", key, conn, None, sender, to, subject, metadata, message_id
                )
            )
        self._record(*received)
        return _Reply(202, b"", {"X-Message-Id": x_message_id})

    def _sparkpost(self, headers: Message[str, str], body: bytes, conn: int) -> _Reply:
        # SparkPost takes the bare API key as Authorization, and a subaccount as the
        # X-MSYS-SUBACCOUNT request header (API reference, "Transmissions", "Subaccounts").
        key = (headers.get("Authorization") or "").strip()
        if not self._accepts(key):
            return _json_reply(401, {"errors": [{"message": "Unauthorized."}]})
        data = json.loads(body)
        content = data["content"]
        to = [r["address"]["email"] for r in data["recipients"]]
        transmission_id = str(next(self._msg_ids))
        received = self._message(
            "sparkpost",
            key,
            conn,
            None,
            next(iter(_addr_specs(content.get("from"))), ""),
            to,
            content.get("subject", ""),
            _str_dict(data.get("metadata")),
            transmission_id,
        )
        subaccount = headers.get("X-MSYS-SUBACCOUNT")
        self._record(dataclasses.replace(received, on_behalf_of=subaccount))
        results = {"total_rejected_recipients": 0, "total_accepted_recipients": len(to)}
        return _json_reply(200, {"results": results | {"id": transmission_id}})

    def _amazon_ses(self, headers: Message[str, str], body: bytes, conn: int) -> _Reply:
        # SES v2 SendEmail with Content.Raw (what Anymail sends), signed with SigV4: the
        # credential recorded is the access key id from the Authorization header (the signature
        # is not checked). TenantName is a request parameter (API reference, "SendEmail").
        match = _SES_CREDENTIAL.search(headers.get("Authorization") or "")
        key = match[1] if match else ""
        if not self._accepts(key):
            return _json_reply(403, {"message": "The security token included is invalid."})
        data = json.loads(body)
        raw = base64.b64decode(data["Content"]["Raw"]["Data"])
        parsed = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        destination = data.get("Destination") or {}
        to = [
            *destination.get("ToAddresses", []),
            *destination.get("CcAddresses", []),
            *destination.get("BccAddresses", []),
        ] or _addr_specs(parsed["To"], parsed["Cc"])
        sender = next(iter(_addr_specs(data.get("FromEmailAddress") or parsed["From"])), "")
        message_id = f"0100{uuid.uuid4().hex}-000000"
        metadata = _str_dict(json.loads(parsed["X-Metadata"] or "{}"))
        received = self._message(
            "amazon_ses", key, conn, None, sender, to, parsed["Subject"] or "", metadata, message_id
        )
        self._record(dataclasses.replace(received, on_behalf_of=data.get("TenantName")))
        return _json_reply(200, {"MessageId": message_id})


# --------------------------------------------------------------------- SMTP


def _throwaway_tls() -> tuple[ssl.SSLContext, tempfile.TemporaryDirectory[str]]:
    """A server context with a certificate for 127.0.0.1 from a new CA, and the CA's PEM file."""
    import trustme  # only needed for TLS

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(LOOPBACK, "localhost").configure_cert(context)
    tmpdir = tempfile.TemporaryDirectory(prefix="fakesmtp-")
    ca.cert_pem.write_to_path(Path(tmpdir.name) / "ca.pem")
    return context, tmpdir


def _free_port() -> int:
    # aiosmtpd's Controller needs a concrete port; asking the kernel for an
    # ephemeral one and releasing it is racy only against other processes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class _QuietSession(Session):
    # aiosmtpd's Session logs a deprecation warning every time smtp_AUTH sets
    # login_data, which would reach stderr on each AUTH; store it silently.
    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _CountingSMTP(SMTP):
    """aiosmtpd protocol (one per connection) reporting to its FakeSMTP."""

    def __init__(self, owner: FakeSMTP, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner
        self.connection_id = 0

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: Any) -> None:
        with self.owner._lock:
            # Controller.start() probes the fresh port once to check the
            # server is up; that connection is not a client, so don't count it.
            counted, self.owner._awaiting_probe = not self.owner._awaiting_probe, False
            if counted:
                self.owner._opened += 1
                self.connection_id = next(self.owner._conn_ids)
                self.owner._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        with self.owner._lock:
            self.owner._live.discard(self)
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        await super().smtp_DATA(arg)
        if self.owner.close_after_each and self.transport is not None:
            self.transport.close()  # after the reply: "250 accepted", then hang up


class _SMTPController(Controller):
    def __init__(self, owner: FakeSMTP, port: int) -> None:
        self.owner = owner
        tls: dict[str, Any] = {}
        if owner.tls == "implicit":
            tls["ssl_context"] = owner._ssl
        elif owner.tls == "starttls":
            tls["tls_context"] = owner._ssl
        super().__init__(
            owner,
            hostname=LOOPBACK,
            port=port,
            server_hostname="fakesmtp.localhost",
            authenticator=owner._authenticate,
            auth_require_tls=False,
            # aiosmtpd's own idle timeout: it closes the session without a word, as servers do.
            timeout=owner.idle_timeout if owner.idle_timeout is not None else 300,
            **tls,
        )

    def factory(self) -> SMTP:
        return _CountingSMTP(self.owner, self.handler, **self.SMTP_kwargs)


class FakeSMTP(_Recorder):
    """Real SMTP server (aiosmtpd) accepting AUTH PLAIN/LOGIN without TLS.

    Any user name/password is accepted unless ``users`` maps the valid ones.
    ``credential`` of a recorded message is ``"user:password"``, or ``""``
    when the client did not authenticate.

    Servers that are hard on kept-alive sessions: ``close_after_each=True``
    hangs up right after accepting each message; ``idle_timeout`` (seconds)
    closes a session idle that long, silently; ``goodbye_at_next_mail(n)``
    answers MAIL FROM with ``421``. ``hang_up_after_data(n)`` makes the next
    ``n`` messages be received (and recorded: the server may have queued
    them) but the session dropped before the reply, so the client cannot
    know whether they were accepted.

    ``tls="starttls"`` offers STARTTLS, ``tls="implicit"`` speaks TLS from the first byte
    (port 465 style), both with a certificate for 127.0.0.1 from a throwaway CA whose PEM file
    is ``ca_bundle_path``. ``refused_senders`` holds addresses MAIL FROM answers with ``550``.
    """

    host = LOOPBACK

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        close_after_each: bool = False,
        idle_timeout: float | None = None,
        tls: Literal["starttls", "implicit"] | None = None,
    ) -> None:
        super().__init__()
        self.users = None if users is None else dict(users)
        self.close_after_each = close_after_each
        self.idle_timeout = idle_timeout
        self.tls = tls
        self.refused_senders: set[str] = set()
        self._ssl: ssl.SSLContext | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        #: PEM file of the throwaway CA while a ``tls=...`` server runs (e.g. for SSL_CERT_FILE).
        self.ca_bundle_path: str | None = None
        self._hang_ups = 0
        self._goodbyes = 0
        self.port = 0
        self._live: set[_CountingSMTP] = set()
        self._awaiting_probe = False
        self._controller: _SMTPController | None = None

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._live)

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("FakeSMTP already started")
        self.port = _free_port()
        if self.tls is not None and self._ssl is None:
            self._ssl, self._tmpdir = _throwaway_tls()
            self.ca_bundle_path = str(Path(self._tmpdir.name) / "ca.pem")
        self._awaiting_probe = True
        self._controller = _SMTPController(self, self.port)
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir, self._ssl, self.ca_bundle_path = None, None, None

    def clear(self) -> None:
        """Also drops pending hang_up_after_data faults."""
        super().clear()
        with self._lock:
            self._hang_ups = 0
            self._goodbyes = 0

    def goodbye_at_next_mail(self, count: int = 1) -> None:
        """Answer the next ``count`` MAIL FROM commands with ``421`` (closing), as a server
        going down or rate-limiting does; nothing was accepted."""
        with self._lock:
            self._goodbyes += count

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """aiosmtpd handler hook: accept the sender, unless a goodbye is due."""
        with self._lock:
            goodbye, self._goodbyes = self._goodbyes > 0, max(self._goodbyes - 1, 0)
        if goodbye:
            return "421 4.3.2 Service shutting down, closing transmission channel"
        if address in self.refused_senders:
            return "550 5.7.1 Sender address rejected: not owned by this account"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def hang_up_after_data(self, count: int = 1) -> None:
        """Drop the session after receiving the next ``count`` messages, before replying."""
        with self._lock:
            self._hang_ups += count

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = (v.decode("utf-8", "replace") for v in auth_data)
            if self.users is None or self.users.get(user) == password:
                return AuthResult(success=True, auth_data=f"{user}:{password}")
        self._reject("smtp", 535)
        # handled=False lets aiosmtpd send its standard 535 reply.
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """aiosmtpd handler hook: record the message and accept it."""
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = BytesParser(policy=policy.default).parsebytes(content, headersonly=True)
        self._record(
            ReceivedMessage(
                esp="smtp",
                credential=str(session.auth_data or ""),
                sender_domain=None,
                from_email=envelope.mail_from or "",
                to=list(envelope.rcpt_tos),
                subject=str(parsed["Subject"] or ""),
                metadata={},
                message_id=str(parsed["Message-ID"] or ""),
                connection_id=getattr(server, "connection_id", 0),
                received_at=time.time(),
            )
        )
        with self._lock:
            hang_up, self._hang_ups = self._hang_ups > 0, max(self._hang_ups - 1, 0)
        if hang_up and server.transport is not None:
            server.transport.abort()  # type: ignore[attr-defined]  # received, maybe queued
        return "250 Message accepted for delivery"


# Extra endpoints register themselves with route() on import: the account APIs provisioning
# creates sub-accounts with, and the read-only ones verification probes.
from . import testing_accounts as _testing_accounts  # noqa: E402, F401
from . import testing_provisioning  # noqa: E402, F401
