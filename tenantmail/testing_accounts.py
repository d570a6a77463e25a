"""Read-only account endpoints of :class:`~tenantmail.testing.FakeESP`, for verification.

What :mod:`tenantmail.verification` asks an ESP before it sends a test message -- "is this key
accepted?", "is this sending domain/identity verified?" -- answered the way each ESP documents
it, under the same per-ESP prefixes as the send APIs:

* Mailgun ``GET /v3/domains/<name>`` and ``/v4/domains/<name>`` (API reference, "Domains": basic
  auth ``api:<key>``; 404 for a domain the account does not have; ``domain.state`` is
  ``active``, ``unverified`` or ``disabled``).
* Postmark ``GET /server`` with ``X-Postmark-Server-Token`` (API reference, "Server": the
  server the token belongs to; 401 with ``ErrorCode`` 10 for a bad token).
* SendGrid ``GET /v3/scopes`` with ``Authorization: Bearer <key>`` (API reference, "API Key
  Permissions": ``{"scopes": [...]}``, the key's own scopes).
* SparkPost ``GET /api/v1/account`` and ``GET /api/v1/sending-domains/<domain>`` with the bare key
  as ``Authorization`` (API reference, "Account", "Sending Domains": ``results.status``
  with ``ownership_verified`` and ``compliance_status``).
* Amazon SES v2 ``GetAccount`` (``GET /v2/email/account``) and ``GetEmailIdentity``
  (``GET /v2/email/identities/<identity>``; ``VerifiedForSendingStatus``, ``VerificationStatus``;
  ``NotFoundException`` for an unknown identity) (Amazon SES API v2 reference).

Knobs, per fake, through :func:`accounts`: ``refused_keys`` (answered 401/403 here, as a revoked
key would be), ``domains`` (a domain's state; ``None`` = unknown to the account; unlisted domains
are active/verified), ``sendgrid_scopes``, ``ses_sending_enabled`` and ``fail_sends`` (the next
``n`` Mailgun sends are answered 500, the account endpoints unaffected).
"""

from __future__ import annotations

import dataclasses
import weakref
from email.message import Message
from re import Match
from urllib.parse import unquote

from .testing import FakeESP, _basic_api_key, _json_reply, _Reply, route

__all__ = ["AccountState", "accounts"]

#: What Mailgun answers for a domain the account does not have.
_MAILGUN_404 = {"message": "Domain not found"}


@dataclasses.dataclass
class AccountState:
    """What a fake ESP account holds, as far as the read-only endpoints tell."""

    refused_keys: set[str] = dataclasses.field(default_factory=set)
    domains: dict[str, str | None] = dataclasses.field(default_factory=dict)
    sendgrid_scopes: list[str] = dataclasses.field(
        default_factory=lambda: ["mail.send", "scopes.read"]
    )
    ses_sending_enabled: bool = True
    fail_sends: int = 0

    def state_of(self, domain: str) -> str | None:
        """``"active"``, ``"unverified"``, ``"disabled"`` or ``None`` (not in the account)."""
        return self.domains.get(domain.lower(), "active")

    def reset(self) -> None:
        fresh = AccountState()
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))


_states: weakref.WeakKeyDictionary[FakeESP, AccountState] = weakref.WeakKeyDictionary()


def accounts(fake: FakeESP) -> AccountState:
    """The account state behind ``fake``'s read-only endpoints (created on first use)."""
    state = _states.get(fake)
    if state is None:
        state = _states[fake] = AccountState()
    return state


def _accepted(fake: FakeESP, credential: str) -> bool:
    return fake._accepts(credential) and credential not in accounts(fake).refused_keys


# -- Mailgun ---------------------------------------------------------------------------------


@route("GET", r"^/mailgun/v[34]/domains/(?P<domain>[^/]+)$")
def _mailgun_domain(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    if not _accepted(fake, _basic_api_key(headers)):
        return _Reply(401, b"Forbidden")
    name = unquote(match["domain"])
    state = accounts(fake).state_of(name)
    if state is None:
        return _json_reply(404, _MAILGUN_404)
    return _json_reply(200, {"domain": {"name": name, "state": state, "type": "custom"}})


@route("POST", r"^/mailgun/v3/(?P<domain>[^/]+)/messages$")
def _mailgun_send(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    # Only here so a test can fail a send but not the account calls before it; else the usual.
    state = accounts(fake)
    if state.fail_sends > 0:
        state.fail_sends -= 1
        return _json_reply(500, {"message": "injected send failure"})
    return fake._mailgun(unquote(match["domain"]), headers, body, conn)


# -- Postmark --------------------------------------------------------------------------------


@route("GET", r"^/postmark/server$")
def _postmark_server(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    token = (headers.get("X-Postmark-Server-Token") or "").strip()
    if not _accepted(fake, token):
        return _json_reply(
            401, {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."}
        )
    return _json_reply(200, {"ID": 1, "Name": "fake server", "DeliveryType": "Live"})


# -- SendGrid --------------------------------------------------------------------------------


@route("GET", r"^/sendgrid/v3/scopes$")
def _sendgrid_scopes(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    scheme, _, key = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not _accepted(fake, key.strip()):
        return _json_reply(401, {"errors": [{"field": None, "message": "authorization required"}]})
    return _json_reply(200, {"scopes": list(accounts(fake).sendgrid_scopes)})


# -- SparkPost -------------------------------------------------------------------------------


def _sparkpost_refused(fake: FakeESP, headers: Message[str, str]) -> bool:
    return not _accepted(fake, (headers.get("Authorization") or "").strip())


@route("GET", r"^/sparkpost/api/v1/account$")
def _sparkpost_account(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    if _sparkpost_refused(fake, headers):
        return _json_reply(401, {"errors": [{"message": "Unauthorized."}]})
    return _json_reply(200, {"results": {"customer_id": 1, "status": "active"}})


@route("GET", r"^/sparkpost/api/v1/sending-domains/(?P<domain>[^/]+)$")
def _sparkpost_domain(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    if _sparkpost_refused(fake, headers):
        return _json_reply(401, {"errors": [{"message": "Unauthorized."}]})
    state = accounts(fake).state_of(unquote(match["domain"]))
    if state is None:
        return _json_reply(404, {"errors": [{"message": "resource not found", "code": "1600"}]})
    verified = state == "active"
    status = {
        "ownership_verified": verified,
        "compliance_status": "valid" if verified else "pending",
    }
    return _json_reply(200, {"results": {"status": status}})


# -- Amazon SES v2 ---------------------------------------------------------------------------


def _ses_refused(fake: FakeESP, headers: Message[str, str]) -> _Reply | None:
    from .testing import _SES_CREDENTIAL

    match = _SES_CREDENTIAL.search(headers.get("Authorization") or "")
    if _accepted(fake, match[1] if match else ""):
        return None
    return _Reply(
        403,
        b'{"message": "The security token included in the request is invalid."}',
        {"x-amzn-ErrorType": "UnrecognizedClientException"},
    )


@route("GET", r"^/amazon_ses/v2/email/account$")
def _ses_account(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    refused = _ses_refused(fake, headers)
    if refused is not None:
        return refused
    enabled = accounts(fake).ses_sending_enabled
    return _json_reply(
        200,
        {
            "SendingEnabled": enabled,
            "ProductionAccessEnabled": True,
            "EnforcementStatus": "HEALTHY",
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0},
        },
    )


@route("GET", r"^/amazon_ses/v2/email/identities/(?P<identity>[^/]+)$")
def _ses_identity(
    fake: FakeESP, match: Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    refused = _ses_refused(fake, headers)
    if refused is not None:
        return refused
    identity = unquote(match["identity"])
    state = accounts(fake).state_of(identity.rpartition("@")[2])
    if state is None:
        return _Reply(
            404,
            b'{"message": "Email identity does not exist."}',
            {"x-amzn-ErrorType": "NotFoundException"},
        )
    verified = state == "active"
    return _json_reply(
        200,
        {
            "IdentityType": "EMAIL_ADDRESS" if "@" in identity else "DOMAIN",
            "VerifiedForSendingStatus": verified,
            "VerificationStatus": "SUCCESS" if verified else "PENDING",
        },
    )
