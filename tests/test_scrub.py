"""``tenantmail.scrub`` on the shapes a live send rarely produces: redirects, unreadable bodies,
errors made but never raised. (The send-path tests drive it through real backends.)"""

from __future__ import annotations

import io
import pickle
import sys

from anymail.exceptions import AnymailAPIError
from requests import PreparedRequest, Response
from requests.exceptions import ConnectionError as RequestsConnectionError

from tenantmail.scrub import scrub_error, scrub_response

KEY = "CANARY-scrub-0123456789abcdef"


def prepared(url: str = "https://esp.example/v1/send") -> PreparedRequest:
    request = PreparedRequest()
    request.prepare(
        method="POST", url=url, headers={"Authorization": f"Bearer {KEY}"}, json={"key": KEY}
    )
    return request


def response(status: int = 200, body: bytes = b'{"ok": true}') -> Response:
    answer = Response()
    answer.status_code = status
    answer.raw = io.BytesIO(body)
    answer.request = prepared()
    answer.url = answer.request.url  # type: ignore[assignment]
    return answer


def test_redirect_history_is_scrubbed_too() -> None:
    final, hop = response(), response(302, b"")
    hop.request = prepared(f"https://user:{KEY}@old.example/send?api_key={KEY}")
    hop.url = hop.request.url  # type: ignore[assignment]
    final.history = [hop]
    scrub_response(final)
    assert KEY.encode() not in pickle.dumps(final)
    assert hop.request.url == "https://old.example/send"
    assert final.json() == {"ok": True}


def test_a_response_without_its_request_or_a_readable_body() -> None:
    answer = response()
    answer.request = None  # type: ignore[assignment]
    unreadable = io.BytesIO(b"never read")
    unreadable.close()
    answer.raw = unreadable
    scrub_response(answer)  # does not raise
    assert answer.raw is None


def test_an_error_made_but_never_raised_inside_the_send_is_scrubbed() -> None:
    def boundary() -> AnymailAPIError:
        try:
            cause = RequestsConnectionError("refused", request=prepared())  # never raised
            raise AnymailAPIError("send failed", email_message=None) from cause
        except AnymailAPIError as error:
            scrub_error(error, sys._getframe(), {})
            return error

    error = boundary()
    assert isinstance(error.__cause__, RequestsConnectionError)
    assert error.__cause__.request is not None
    assert dict(error.__cause__.request.headers) == {}
    assert error.__cause__.request.body is None
    assert error.email_message is None
