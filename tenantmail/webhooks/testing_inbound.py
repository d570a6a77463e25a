"""Inbound posts for Brevo, Resend and Amazon SES, shaped as each ESP documents them, and the
content-download endpoints they need, added to :class:`tenantmail.testing.FakeESP`.

- Brevo "Inbound parsing" webhook: ``{"items": [...]}``; attachments are downloaded from
  ``GET {api_url}inbound/attachments/{DownloadToken}`` with the ``api-key`` header.
- Resend ``email.received`` (Svix-signed); the message is downloaded from
  ``GET {api_url}emails/receiving/{email_id}`` with ``Authorization: Bearer``.
- Amazon SES receipt rule with an SNS action (the message inline, base64) or an S3 action.

Point Anymail's platform settings at the fake (``ANYMAIL["BREVO_API_URL"] =
f"{fake.base_url}brevo/v3/"``, ``ANYMAIL["RESEND_API_URL"] = f"{fake.base_url}resend/"``). Every
download the fake answers is recorded in :data:`downloads` as ``(esp, credential)``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from ..testing import FakeESP, _json_reply, _Reply, route
from .testing import FakeSNS, Post, basic_auth, sns_notification

#: ``(esp, credential)`` of every content download the fake ESP answered.
downloads: list[tuple[str, str]] = []

ATTACHMENT_BYTES = b"attachment content\n"


@route("GET", r"^/brevo/v3/inbound/attachments/(?P<token>[^/]+)$")
def _brevo_attachment(
    fake: FakeESP, match: re.Match[str], headers: Message, body: bytes, conn: int
) -> _Reply:
    key = headers.get("api-key") or ""
    if not key:
        return _json_reply(401, {"code": "unauthorized", "message": "Key not found"})
    downloads.append(("brevo", key))
    return _Reply(200, ATTACHMENT_BYTES, {"Content-Type": "text/plain; charset=utf-8"})


@route("GET", r"^/resend/emails/receiving/(?P<id>[^/]+)$")
def _resend_received(
    fake: FakeESP, match: re.Match[str], headers: Message, body: bytes, conn: int
) -> _Reply:
    auth = headers.get("Authorization") or ""
    key = auth.removeprefix("Bearer ").strip()
    if not auth.startswith("Bearer ") or not key:
        return _json_reply(401, {"name": "missing_api_key", "message": "Missing API key"})
    downloads.append(("resend", key))
    return _json_reply(
        200,
        {
            "object": "email",
            "id": match["id"],
            "from": "bob@example.net",
            "to": ["support@acme.example"],
            "subject": "Hello from Resend",
            "text": "hi",
            "html": None,
            "headers": {"X-Test": "1"},
            "attachments": [],
        },
    )


def brevo_inbound_post(
    credential: str | None, *, subject: str = "Hello from Brevo", attachment: bool = False
) -> Post:
    item: dict[str, Any] = {
        "Uuid": [f"uuid-{secrets.token_hex(6)}"],
        "MessageId": f"<{secrets.token_hex(6)}@example.net>",
        "From": {"Name": "Bob", "Address": "bob@example.net"},
        "To": [{"Name": None, "Address": "support@acme.example"}],
        "Subject": subject,
        "RawTextBody": "hi\n",
        "RawHtmlBody": "<p>hi</p>",
        "ExtractedMarkdownMessage": "hi",
        "Headers": {
            "From": "Bob <bob@example.net>",
            "To": "support@acme.example",
            "Subject": subject,
            "Return-Path": "<bob@example.net>",
        },
        "Attachments": [],
    }
    if attachment:
        item["Attachments"] = [
            {
                "Name": "notes.txt",
                "ContentType": "text/plain",
                "ContentLength": len(ATTACHMENT_BYTES),
                "ContentID": None,
                "DownloadToken": f"tok-{secrets.token_hex(8)}",
            }
        ]
    return (
        json.dumps({"items": [item]}).encode(),
        "application/json",
        basic_auth(credential) if credential else {},
    )


def resend_inbound_post(inbound_secret: str | None, *, email_id: str | None = None) -> Post:
    body = json.dumps(
        {
            "type": "email.received",
            "created_at": datetime.now(UTC).isoformat(),
            "data": {
                "email_id": email_id or f"rcv-{secrets.token_hex(8)}",
                "from": "bob@example.net",
                "to": ["support@acme.example"],
                "subject": "Hello from Resend",
            },
        }
    ).encode()
    headers: dict[str, str] = {}
    if inbound_secret is not None:
        from svix.webhooks import Webhook

        msg_id = f"msg_{secrets.token_hex(8)}"
        now = datetime.now(UTC)
        headers = {
            "HTTP_SVIX_ID": msg_id,
            "HTTP_SVIX_TIMESTAMP": str(int(now.timestamp())),
            "HTTP_SVIX_SIGNATURE": Webhook(inbound_secret).sign(msg_id, now, body.decode()),
        }
    return body, "application/json", headers


def ses_inbound_post(
    sns: FakeSNS | None,
    credential: str | None,
    *,
    action: str = "SNS",
    subject: str = "Hello from SES",
    bucket: str = "platform-private-bucket",
    key: str = "inbound/0001",
    topic_arn: str = "arn:aws:sns:us-east-1:123456789012:ses-inbound",
) -> Post:
    mime = f"From: bob@example.net\r\nTo: support@acme.example\r\nSubject: {subject}\r\n\r\nhi\r\n"
    receipt: dict[str, Any] = {
        "recipients": ["support@acme.example"],
        "spamVerdict": {"status": "PASS"},
    }
    ses_event: dict[str, Any] = {
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-01-01T10:00:00.000Z",
            "source": "bob@example.net",
            "messageId": f"ses-{secrets.token_hex(6)}",
            "destination": ["support@acme.example"],
        },
        "receipt": receipt,
    }
    if action == "SNS":
        receipt["action"] = {"type": "SNS", "topicArn": topic_arn, "encoding": "BASE64"}
        ses_event["content"] = base64.b64encode(mime.encode()).decode()
    else:
        receipt["action"] = {"type": "S3", "bucketName": bucket, "objectKey": key}
    return sns_notification(sns, credential, ses_event, topic_arn)
