"""Strip credentials from what a send hands back: statuses, errors and their tracebacks.

After a send, Anymail leaves the ``requests`` response on ``message.anymail_status`` and on its
errors, and a response keeps the prepared request -- ``Authorization`` (or ``X-Postmark-Server-
Token``, or Mandrill's JSON body) included. Errors also carry the inner backend and the payload.
Anything that pickles a message or an error (Celery with pickle, caches, retry queues) would
write the tenant's key in clear. What people legitimately read stays: the status, message ids,
the response's status, headers and body, the request's method and URL.

The frames below the send boundary hold the key in their locals (Anymail's ``params``,
``requests``' headers, ``smtplib``'s password). Django hides them from its error reports only
when ``DEBUG`` is off; error trackers that record locals never do. Their locals are cleared
before the error leaves the send, so every report still shows *where* it failed, never the key.
This all runs once per send (statuses) or on the error path only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import FrameType, TracebackType
from urllib.parse import urlsplit, urlunsplit

from anymail.exceptions import AnymailError
from django.core.mail import EmailMessage
from requests import PreparedRequest, RequestException, Response
from requests.structures import CaseInsensitiveDict


def _safe_url(url: str | None) -> str | None:
    # Credentials can ride in the URL too: user:password@host (requests keeps it there) or a
    # query string (?key=...). Keep scheme, host and path.
    if not url or ("@" not in url and "?" not in url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub_request(request: PreparedRequest) -> None:
    """Keep only the method and the URL: headers and body are where the credential travels."""
    request.headers = CaseInsensitiveDict()
    request.body = None
    request.url = _safe_url(request.url)


def scrub_response(response: Response) -> None:
    _detach(response)
    if response.request is not None:
        scrub_request(response.request)
    response.url = _safe_url(response.url)  # type: ignore[assignment]
    for earlier in response.history:  # redirects: each has its own request
        scrub_response(earlier)


def scrub_error(
    error: BaseException,
    boundary: FrameType,
    originals: Mapping[int, EmailMessage],
) -> None:
    """Scrub ``error`` (caught in the frame ``boundary``) and the exceptions chained to it.

    Only exceptions raised at or below ``boundary`` are touched: one the caller was already
    handling when it sent (and so the ``__context__`` of ours) keeps its attributes and locals.
    ``originals`` maps ``id()`` of each copy we sent to the caller's message, so an error's
    ``email_message`` is the object the caller passed (as with a plain Anymail backend) and not
    a copy carrying the tenant's defaults.
    """
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen or not _raised_below(exc, boundary):
            continue
        seen.add(id(exc))
        _scrub_attributes(exc, originals)
        _clear_locals_below(exc.__traceback__, boundary)
        pending += [e for e in (exc.__cause__, exc.__context__) if e is not None]


def _scrub_attributes(exc: BaseException, originals: Mapping[int, EmailMessage]) -> None:
    if isinstance(exc, AnymailError):
        # The inner backend holds the key (and is pooled: nobody outside the pool may use it);
        # the payload holds it in its auth, headers or body. esp_name was read at raise time.
        exc.backend = None
        exc.payload = None
        message = exc.email_message
        if message is not None and id(message) in originals:
            exc.email_message = originals[id(message)]
    response = getattr(exc, "response", None)
    if isinstance(response, Response):
        scrub_response(response)
    # requests' own errors, and Anymail's API errors (which are requests.HTTPErrors too).
    if isinstance(exc, RequestException) and isinstance(exc.request, PreparedRequest):
        scrub_request(exc.request)


def _detach(response: Response) -> None:
    """Cut the response loose from the connection it came on: the caller gets plain data.

    Its body is read first (an error response's is still unread: Anymail raises before reading
    it, and the error's message quotes it). urllib3 2 closes a pool's sockets only when the pool
    is garbage: while anything (a log record, an error page, a retry queue, a status kept on a
    message) held ``raw``, the socket of a discarded backend would stay open.
    """
    try:
        _ = response.content
    except Exception:  # a body that cannot be read is not worth an error of its own
        response.close()
    response.raw = None


def _clear_locals_below(tb: TracebackType | None, boundary: FrameType) -> None:
    while tb is not None:
        frame = tb.tb_frame
        # Every frame called from the boundary has returned by now, so clear() cannot fail.
        if frame is not boundary and _called_from(frame, boundary):
            frame.clear()
        tb = tb.tb_next


def _raised_below(exc: BaseException, boundary: FrameType) -> bool:
    tb = exc.__traceback__
    if tb is None:  # made (never raised) inside the send, e.g. to be a __cause__
        return True
    return tb.tb_frame is boundary or _called_from(tb.tb_frame, boundary)


def _called_from(frame: FrameType, boundary: FrameType) -> bool:
    # A finished frame keeps its caller (f_back), so this tells frames of the inner send from
    # those of an exception the caller was already handling (a __context__ from outside).
    caller = frame.f_back
    while caller is not None:
        if caller is boundary:
            return True
        caller = caller.f_back
    return False
