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

from collections.abc import Iterable, Mapping
from types import FrameType, TracebackType
from urllib.parse import urlsplit, urlunsplit

from anymail.exceptions import AnymailError
from django.core.mail import EmailMessage
from requests import PreparedRequest, RequestException, Response
from requests.structures import CaseInsensitiveDict

#: How far up a frame's callers to look for the send boundary (Anymail + requests + urllib3 +
#: http.client nest ~25 deep; the limit only bounds the walk for unrelated frames).
_MAX_DEPTH = 200


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
    if response.request is not None:
        scrub_request(response.request)
    response.url = _safe_url(response.url)  # type: ignore[assignment]
    for earlier in response.history:  # redirects: each has its own request
        scrub_response(earlier)


def scrub_statuses(messages: Iterable[EmailMessage]) -> None:
    """Scrub each message's ``anymail_status.esp_response`` (in place, shared with errors)."""
    for message in messages:
        status = message.__dict__.get("anymail_status")
        response = getattr(status, "esp_response", None)
        if isinstance(response, Response):
            scrub_response(response)


def scrub_error(
    error: BaseException,
    boundary: FrameType,
    originals: Mapping[int, EmailMessage],
) -> None:
    """Scrub ``error`` and every exception chained to it, raised below ``boundary``.

    ``originals`` maps ``id()`` of each copy we sent to the caller's message, so an error's
    ``email_message`` is the object the caller passed (as with a plain Anymail backend) and not
    a copy carrying the tenant's defaults.
    """
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
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
    if isinstance(exc, RequestException):  # requests' own, and Anymail's API errors
        if isinstance(exc.request, PreparedRequest):
            scrub_request(exc.request)
        elif exc.request is not None:
            exc.request = None  # an unprepared requests.Request: headers, auth, data


def _clear_locals_below(tb: TracebackType | None, boundary: FrameType) -> None:
    while tb is not None:
        frame = tb.tb_frame
        # Every frame called from the boundary has returned by now, so clear() cannot fail.
        if frame is not boundary and _called_from(frame, boundary):
            frame.clear()
        tb = tb.tb_next


def _called_from(frame: FrameType, boundary: FrameType) -> bool:
    caller = frame.f_back
    for _ in range(_MAX_DEPTH):
        if caller is None:
            return False
        if caller is boundary:
            return True
        caller = caller.f_back
    return False
