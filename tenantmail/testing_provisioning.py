"""FakeESP's account APIs for provisioning (:mod:`tenantmail.provisioning`), and Brevo's send API.

Loaded with :mod:`tenantmail.testing` (one import line at its end) and registered with its
:func:`~tenantmail.testing.route`. Each endpoint follows the shape cited in the matching
``tenantmail.provisioning`` module, checks the account credential the way the real service does
(Mailgun basic auth, ``X-Postmark-Account-Token``, SigV4's access key id, Brevo's ``api-key``),
and keeps what it created on the FakeESP instance: :func:`accounts` returns that state, which also
lets a test make one named step fail (:meth:`FakeAccounts.fail_at`) while the steps before it
succeed -- ``FakeESP.fail_next`` fails whatever request comes next.

Query strings do not reach route handlers (FakeESP routes by path), so list endpoints answer every
item and the client picks the exact name, as it must with the real filters (which match
substrings).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import re
import threading
import time
import uuid
from email.message import Message
from typing import Any

from .testing import (
    _SES_CREDENTIAL,
    FakeESP,
    _basic_api_key,
    _json_reply,
    _Reply,
    route,
)

__all__ = ["STEPS", "FakeAccounts", "accounts"]

#: Step names a test can make fail with :meth:`FakeAccounts.fail_at`.
STEPS = frozenset(
    {
        "mailgun.list",
        "mailgun.create",
        "postmark.list",
        "postmark.get",
        "postmark.create",
        "amazon_ses.get",
        "amazon_ses.create",
        "amazon_ses.list_resources",
        "amazon_ses.associate",
        "brevo.list",
        "brevo.create",
        "brevo.key",
        "postmark.webhooks",
        "postmark.register_webhook",
        "postmark.update_webhook",
        "brevo.webhooks",
        "brevo.register_webhook",
        "brevo.update_webhook",
    }
)


@dataclasses.dataclass
class FakeAccounts:
    """What the fake ESP accounts hold; every map is keyed by the ESP's own id or name."""

    mailgun: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    postmark: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    ses_tenants: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    ses_resources: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    brevo: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: Brevo sub-account id -> the keys issued for it.
    brevo_keys: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    #: Webhooks registered, by id: Postmark's (with the server ``token`` they were registered
    #: with) and Brevo's (with the sub-account ``key``).
    postmark_webhooks: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    brevo_webhooks: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: ``(step, credential)`` for every account API call that passed authentication.
    calls: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _faults: collections.defaultdict[str, collections.deque[tuple[int, object]]] = (
        dataclasses.field(
            default_factory=lambda: collections.defaultdict(collections.deque), repr=False
        )
    )
    _ids: itertools.count[int] = dataclasses.field(
        default_factory=lambda: itertools.count(1001), repr=False
    )

    def fail_at(self, step: str, status: int, count: int = 1, body: object = None) -> None:
        """Answer the next ``count`` requests of ``step`` (see :data:`STEPS`) with ``status`` and
        ``body`` (JSON; an error message by default) -- a 200 with an undocumented body, say."""
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {sorted(STEPS)}")
        reply = {"message": "injected failure"} if body is None else body
        with self.lock:
            self._faults[step].extend([(status, reply)] * count)

    def steps(self) -> list[str]:
        with self.lock:
            return [step for step, _ in self.calls]

    def _enter(self, fake: FakeESP, step: str, credential: str) -> tuple[int, object] | None:
        """The injected reply for this call, if any; else record the call (None)."""
        with self.lock:
            pending = self._faults.get(step)
            if pending:
                return pending.popleft()
            self.calls.append((step, credential))
            return None

    def _next_id(self) -> int:
        return next(self._ids)


_STATE_LOCK = threading.Lock()


def accounts(fake: FakeESP) -> FakeAccounts:
    """The provisioning state of ``fake`` (created on first use, kept until the fake is gone)."""
    with _STATE_LOCK:
        state = fake.__dict__.get("_tenantmail_accounts")
        if state is None:
            state = fake.__dict__["_tenantmail_accounts"] = FakeAccounts()
        return state


def _fault(injected: tuple[int, object]) -> _Reply:
    return _json_reply(*injected)


def _form(headers: Message[str, str], body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


# -- Mailgun: /v5/accounts/subaccounts (HTTP basic auth "api:<primary key>") ---------------------


def _mailgun(
    fake: FakeESP, step: str, headers: Message[str, str]
) -> tuple[FakeAccounts, _Reply | None]:
    state = accounts(fake)
    key = _basic_api_key(headers)
    if not fake._accepts(key):
        return state, _Reply(401, b"Forbidden")
    injected = state._enter(fake, step, key)
    return state, None if injected is None else _fault(injected)


@route("GET", r"/mailgun/v5/accounts/subaccounts$")
def mailgun_list(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _mailgun(fake, "mailgun.list", headers)
    if refused:
        return refused
    with state.lock:
        items = list(state.mailgun.values())
    return _json_reply(200, {"subaccounts": items, "total": len(items)})


@route("POST", r"/mailgun/v5/accounts/subaccounts$")
def mailgun_create(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _mailgun(fake, "mailgun.create", headers)
    if refused:
        return refused
    name = _form(headers, body).get("name", "")
    if not name:
        return _json_reply(400, {"message": "name is required"})
    item = {"id": uuid.uuid4().hex[:24], "name": name, "status": "open"}
    with state.lock:
        state.mailgun[item["id"]] = item
    return _json_reply(200, {"subaccount": item})


# -- Postmark: /servers (X-Postmark-Account-Token) -----------------------------------------------


def _postmark(
    fake: FakeESP, step: str, headers: Message[str, str]
) -> tuple[FakeAccounts, _Reply | None]:
    state = accounts(fake)
    token = (headers.get("X-Postmark-Account-Token") or "").strip()
    if not fake._accepts(token):
        return state, _json_reply(
            401, {"ErrorCode": 10, "Message": "Request does not contain a valid Account token."}
        )
    injected = state._enter(fake, step, token)
    return state, None if injected is None else _fault(injected)


@route("GET", r"/postmark/servers$")
def postmark_list(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _postmark(fake, "postmark.list", headers)
    if refused:
        return refused
    with state.lock:
        servers = list(state.postmark.values())
    return _json_reply(200, {"TotalCount": len(servers), "Servers": servers})


@route("GET", r"/postmark/servers/(?P<id>\d+)$")
def postmark_get(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _postmark(fake, "postmark.get", headers)
    if refused:
        return refused
    with state.lock:
        server = state.postmark.get(int(match["id"]))
    if server is None:
        return _json_reply(404, {"ErrorCode": 600, "Message": "Server not found."})
    return _json_reply(200, server)


@route("POST", r"/postmark/servers$")
def postmark_create(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _postmark(fake, "postmark.create", headers)
    if refused:
        return refused
    name = json.loads(body).get("Name")
    if not name:
        return _json_reply(422, {"ErrorCode": 602, "Message": "Name is required."})
    server_id = state._next_id()
    server = {
        "ID": server_id,
        "Name": name,
        "ApiTokens": [str(uuid.uuid4())],
        "ServerLink": f"https://account.postmarkapp.com/servers/{server_id}/streams",
        "Color": "blue",
    }
    with state.lock:
        state.postmark[server_id] = server
    return _json_reply(200, server)


# -- Amazon SES v2 tenants (SigV4; the access key id is the credential) --------------------------


def _ses_error(status: int, code: str, message: str) -> _Reply:
    # restJson: botocore reads the error code from x-amzn-ErrorType.
    return _json_reply(status, {"message": message}, **{"x-amzn-ErrorType": code})


def _ses(
    fake: FakeESP, step: str, headers: Message[str, str]
) -> tuple[FakeAccounts, _Reply | None]:
    state = accounts(fake)
    found = _SES_CREDENTIAL.search(headers.get("Authorization") or "")
    key = found[1] if found else ""
    if not fake._accepts(key):
        return state, _ses_error(
            403, "UnrecognizedClientException", "The security token included is invalid."
        )
    injected = state._enter(fake, step, key)
    if injected is None:
        return state, None
    if injected[0] < 300:
        return state, _json_reply(*injected)
    return state, _ses_error(injected[0], "InternalFailure", "injected")


def _tenant(name: str, tenant_id: str) -> dict[str, Any]:
    return {
        "TenantName": name,
        "TenantId": tenant_id,
        "TenantArn": f"arn:aws:ses:eu-west-1:123456789012:tenant/{name}/{tenant_id}",
        "CreatedTimestamp": time.time(),
        "SendingStatus": "ENABLED",
    }


@route("POST", r"/amazon_ses/v2/email/tenants/get$")
def ses_get(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _ses(fake, "amazon_ses.get", headers)
    if refused:
        return refused
    with state.lock:
        tenant = state.ses_tenants.get(json.loads(body)["TenantName"])
    if tenant is None:
        return _ses_error(404, "NotFoundException", "Tenant not found")
    return _json_reply(200, {"Tenant": tenant})


@route("POST", r"/amazon_ses/v2/email/tenants$")
def ses_create(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _ses(fake, "amazon_ses.create", headers)
    if refused:
        return refused
    name = json.loads(body)["TenantName"]
    with state.lock:
        if name in state.ses_tenants:
            return _ses_error(400, "AlreadyExistsException", "Tenant already exists")
        tenant = state.ses_tenants[name] = _tenant(name, f"tn-{uuid.uuid4().hex[:16]}")
        state.ses_resources[name] = []
    return _json_reply(200, tenant)


@route("POST", r"/amazon_ses/v2/email/tenants/resources/list$")
def ses_list_resources(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _ses(fake, "amazon_ses.list_resources", headers)
    if refused:
        return refused
    with state.lock:
        arns = state.ses_resources.get(json.loads(body)["TenantName"])
    if arns is None:
        return _ses_error(404, "NotFoundException", "Tenant not found")
    kinds = {"identity": "EMAIL_IDENTITY", "configuration-set": "CONFIGURATION_SET"}
    resources = [
        {
            "ResourceType": kinds.get(arn.split(":")[-1].split("/")[0], "EMAIL_TEMPLATE"),
            "ResourceArn": arn,
        }
        for arn in arns
    ]
    return _json_reply(200, {"TenantResources": resources})


@route("POST", r"/amazon_ses/v2/email/tenants/resources$")
def ses_associate(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _ses(fake, "amazon_ses.associate", headers)
    if refused:
        return refused
    data = json.loads(body)
    with state.lock:
        arns = state.ses_resources.get(data["TenantName"])
        if arns is None:
            return _ses_error(404, "NotFoundException", "Tenant not found")
        if data["ResourceArn"] in arns:
            return _ses_error(400, "AlreadyExistsException", "Already associated")
        arns.append(data["ResourceArn"])
    return _json_reply(200, {})


# -- Brevo: /v3/corporate/subAccount (api-key header) and the send API ---------------------------


def _brevo(
    fake: FakeESP, step: str, headers: Message[str, str]
) -> tuple[FakeAccounts, _Reply | None]:
    state = accounts(fake)
    key = (headers.get("api-key") or "").strip()
    if not fake._accepts(key):
        return state, _json_reply(401, {"code": "unauthorized", "message": "Key not found"})
    injected = state._enter(fake, step, key)
    return state, None if injected is None else _fault(injected)


@route("GET", r"/brevo/v3/corporate/subAccount$")
def brevo_list(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _brevo(fake, "brevo.list", headers)
    if refused:
        return refused
    with state.lock:
        items = list(state.brevo.values())
    return _json_reply(200, {"count": len(items), "subAccounts": items})


@route("POST", r"/brevo/v3/corporate/subAccount$")
def brevo_create(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _brevo(fake, "brevo.create", headers)
    if refused:
        return refused
    data = json.loads(body)
    if not data.get("companyName") or "@" not in str(data.get("email", "")):
        return _json_reply(400, {"code": "missing_parameter", "message": "companyName, email"})
    sub_id = state._next_id()
    item = {
        "id": sub_id,
        "companyName": data["companyName"],
        "active": True,
        "createdAt": int(time.time() * 1000),
        "groups": [],
    }
    with state.lock:
        state.brevo[sub_id] = item
    return _json_reply(201, {"id": sub_id})


@route("POST", r"/brevo/v3/corporate/subAccount/key$")
def brevo_key(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _brevo(fake, "brevo.key", headers)
    if refused:
        return refused
    data = json.loads(body)
    with state.lock:
        if data.get("id") not in state.brevo or not data.get("name"):
            return _json_reply(400, {"code": "invalid_parameter", "message": "id"})
        key = f"xkeysib-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}"
        state.brevo_keys.setdefault(data["id"], []).append(key)
    return _json_reply(201, {"key": key, "status": "success"})


# The APIs a provisioned tenant uses next (webhook registration, Brevo's send API) live in their
# own module; importing it here keeps them loaded with FakeESP.
from . import testing_provisioned  # noqa: E402, F401
