"""FakeESP endpoints a provisioned tenant uses next: webhook registration (Postmark, Brevo) and
Brevo's send API. Loaded with :mod:`tenantmail.testing_provisioning`, whose state they share
(:func:`~tenantmail.testing_provisioning.accounts`); shapes as cited in
:mod:`tenantmail.provisioning.webhooks`.
"""

from __future__ import annotations

import json
import re
import uuid
from email.message import Message

from .testing import FakeESP, _addr_specs, _json_reply, _Reply, _str_dict, route
from .testing_provisioning import FakeAccounts, _brevo, _fault, accounts

__all__: list[str] = []


# Postmark "Webhooks" (server token): GET/POST /webhooks, PUT /webhooks/{id}.


def _postmark_server(
    fake: FakeESP, step: str, headers: Message[str, str]
) -> tuple[FakeAccounts, str, _Reply | None]:
    state = accounts(fake)
    token = (headers.get("X-Postmark-Server-Token") or "").strip()
    if not fake._accepts(token):
        return (
            state,
            token,
            _json_reply(
                401, {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."}
            ),
        )
    injected = state._enter(fake, step, token)
    return state, token, None if injected is None else _fault(injected)


@route("GET", r"/postmark/webhooks$")
def postmark_webhooks(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, token, refused = _postmark_server(fake, "postmark.webhooks", headers)
    if refused:
        return refused
    with state.lock:
        hooks = [
            {k: v for k, v in h.items() if k != "token"}
            for h in state.postmark_webhooks.values()
            if h["token"] == token
        ]
    return _json_reply(200, {"Webhooks": hooks})


@route("POST", r"/postmark/webhooks$")
def postmark_register_webhook(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, token, refused = _postmark_server(fake, "postmark.register_webhook", headers)
    if refused:
        return refused
    data = json.loads(body)
    if not str(data.get("Url", "")).startswith(("https://", "http://")):
        return _json_reply(422, {"ErrorCode": 1200, "Message": "Url is invalid."})
    hook_id = state._next_id()
    hook = {**data, "ID": hook_id, "MessageStream": data.get("MessageStream", "outbound")}
    with state.lock:
        state.postmark_webhooks[hook_id] = {**hook, "token": token}
    return _json_reply(200, hook)


@route("PUT", r"/postmark/webhooks/(?P<id>\d+)$")
def postmark_update_webhook(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, token, refused = _postmark_server(fake, "postmark.update_webhook", headers)
    if refused:
        return refused
    with state.lock:
        hook = state.postmark_webhooks.get(int(match["id"]))
        if hook is None or hook["token"] != token:
            return _json_reply(404, {"ErrorCode": 1302, "Message": "Webhook not found."})
        hook.update(json.loads(body))
        shown = {k: v for k, v in hook.items() if k != "token"}
    return _json_reply(200, shown)


# Brevo "Webhooks" (the sub-account's key): GET/POST /v3/webhooks, PUT /v3/webhooks/{id}.


@route("GET", r"/brevo/v3/webhooks$")
def brevo_webhooks(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _brevo(fake, "brevo.webhooks", headers)
    if refused:
        return refused
    key = (headers.get("api-key") or "").strip()
    with state.lock:
        hooks = [
            {k: v for k, v in h.items() if k != "key"}
            for h in state.brevo_webhooks.values()
            if h["key"] == key
        ]
    return _json_reply(200, {"webhooks": hooks})


@route("POST", r"/brevo/v3/webhooks$")
def brevo_register_webhook(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _brevo(fake, "brevo.register_webhook", headers)
    if refused:
        return refused
    data = json.loads(body)
    if not data.get("url") or not data.get("events"):
        return _json_reply(400, {"code": "missing_parameter", "message": "url, events"})
    hook_id = state._next_id()
    with state.lock:
        state.brevo_webhooks[hook_id] = {
            **data,
            "id": hook_id,
            "key": (headers.get("api-key") or "").strip(),
        }
    return _json_reply(201, {"id": hook_id})


@route("PUT", r"/brevo/v3/webhooks/(?P<id>\d+)$")
def brevo_update_webhook(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    state, refused = _brevo(fake, "brevo.update_webhook", headers)
    if refused:
        return refused
    key = (headers.get("api-key") or "").strip()
    with state.lock:
        hook = state.brevo_webhooks.get(int(match["id"]))
        if hook is None or hook["key"] != key:
            return _json_reply(404, {"code": "document_not_found", "message": "Webhook not found"})
        hook.update(json.loads(body))
    return _Reply(204)


@route("POST", r"/brevo/v3/smtp/email$")
def brevo_send(
    fake: FakeESP, match: re.Match[str], headers: Message[str, str], body: bytes, conn: int
) -> _Reply:
    # Brevo "Send a transactional email" (POST /v3/smtp/email, api-key header; 201 {"messageId"}),
    # as Anymail's Brevo backend sends it: metadata travels in the X-Mailin-custom header.
    key = (headers.get("api-key") or "").strip()
    if not fake._accepts(key):
        return _json_reply(401, {"code": "unauthorized", "message": "Key not found"})
    data = json.loads(body)
    to = [r["email"] for kind in ("to", "cc", "bcc") for r in data.get(kind, [])]
    if not to or not (data.get("sender") or {}).get("email"):
        return _json_reply(400, {"code": "missing_parameter", "message": "sender, to"})
    metadata = _str_dict(json.loads((data.get("headers") or {}).get("X-Mailin-custom") or "{}"))
    message_id = f"<{uuid.uuid4().hex}@smtp-relay.mailin.fr>"
    sender = next(iter(_addr_specs((data.get("sender") or {}).get("email"))), "")
    fake._record(
        fake._message(
            "brevo", key, conn, None, sender, to, data.get("subject", ""), metadata, message_id
        )
    )
    return _json_reply(201, {"messageId": message_id})
