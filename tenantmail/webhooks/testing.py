"""Signed ESP webhook payloads, built the way each ESP documents them (tests and the demo).

Each ``*_post`` helper returns ``(body, content_type, headers)`` ready for Django's test client
or ``requests``. Only the far side is imitated: what an ESP would post. :class:`FakeSNS` holds an
RSA signing key and serves its certificate over HTTPS from a throwaway CA (trustme), so the SNS
signature check runs end to end, certificate fetch and TLS verification included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import itertools
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

Post = tuple[bytes, str, dict[str, str]]
_ids = itertools.count(1)


def basic_auth(credential: str) -> dict[str, str]:
    """``{"HTTP_AUTHORIZATION": ...}`` for a ``"user:password"`` webhook secret."""
    token = base64.b64encode(credential.encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def _auth(credential: str | None) -> dict[str, str]:
    return basic_auth(credential) if credential else {}


# -- Mailgun ---------------------------------------------------------------------------------------


def mailgun_post(
    signing_key: str,
    *,
    event: str = "delivered",
    recipient: str = "ann@example.com",
    message_id: str = "20260101.1@mg.example.com",
    metadata: Mapping[str, str] | None = None,
    severity: str | None = None,
    timestamp: float | None = None,
    token: str | None = None,
) -> Post:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    token = token or secrets.token_hex(25)
    signature = hmac.new(
        signing_key.encode(), f"{stamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    data: dict[str, Any] = {
        "event": event,
        "id": f"evt-{next(_ids)}",
        "timestamp": float(stamp),
        "recipient": recipient,
        "message": {"headers": {"message-id": message_id}},
        "user-variables": dict(metadata or {}),
    }
    if event == "failed":
        data.update(severity=severity or "permanent", reason="bounce")
        data["delivery-status"] = {"code": 550, "message": "5.1.1 no such user"}
    body = {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": data,
    }
    return json.dumps(body).encode(), "application/json", {}


# -- Postmark (basic auth) -------------------------------------------------------------------------


def postmark_post(
    credential: str | None,
    *,
    record: str = "Delivery",
    recipient: str = "ann@example.com",
    message_id: str = "883953f4-6105-42a2-a16a-77a8eac79483",
    metadata: Mapping[str, str] | None = None,
) -> Post:
    body: dict[str, Any] = {
        "RecordType": record,
        "MessageID": message_id,
        "Metadata": dict(metadata or {}),
        "Tag": "",
        "ServerID": 23,
    }
    if record == "Delivery":
        body.update(Recipient=recipient, DeliveredAt="2026-01-01T10:00:00Z", Details="250 OK")
    else:
        body.update(
            Type="HardBounce",
            TypeCode=1,
            Email=recipient,
            BouncedAt="2026-01-01T10:00:00Z",
            Description="The server was unable to deliver your message",
            ID=next(_ids),
        )
    return (
        json.dumps(body).encode(),
        "application/json",
        basic_auth(credential) if credential else {},
    )


# -- Brevo (basic auth) ----------------------------------------------------------------------------


def brevo_post(
    credential: str | None,
    *,
    event: str = "delivered",
    recipient: str = "ann@example.com",
    message_id: str = "<202601011000.1@smtp-relay.mailin.fr>",
    metadata: Mapping[str, str] | None = None,
) -> Post:
    body = {
        "event": event,
        "email": recipient,
        "id": next(_ids),
        "message-id": message_id,
        "ts_epoch": int(time.time() * 1000),
        "X-Mailin-custom": json.dumps(dict(metadata or {})),
    }
    return (
        json.dumps(body).encode(),
        "application/json",
        basic_auth(credential) if credential else {},
    )


# -- SendGrid (ECDSA P-256 signed event webhook) ---------------------------------------------------


class SendGridKey:
    """A verification key pair as SendGrid's "Signed Event Webhook" uses."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._private = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> str:
        """What SendGrid shows as the verification key (base64 DER, no PEM armour)."""
        from cryptography.hazmat.primitives import serialization

        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, timestamp: str, body: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        signature = self._private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()


def sendgrid_post(
    key: SendGridKey | None,
    *,
    events: list[dict[str, Any]] | None = None,
    event: str = "delivered",
    recipient: str = "ann@example.com",
    message_id: str = "14c5d75ce93.dfd.64b469@ismtpd-555",
    metadata: Mapping[str, str] | None = None,
) -> Post:
    if events is None:
        one: dict[str, Any] = {
            "email": recipient,
            "timestamp": int(time.time()),
            "event": event,
            "sg_event_id": f"sg-{next(_ids)}",
            "sg_message_id": message_id,
            "smtp-id": f"<{message_id}>",
            **dict(metadata or {}),
        }
        if event == "bounce":
            one.update(type="bounce", reason="550 5.1.1 no such user", status="5.1.1")
        events = [one]
    body = json.dumps(events).encode()
    headers: dict[str, str] = {}
    if key is not None:
        stamp = str(int(time.time()))
        headers = {
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": key.sign(stamp, body),
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": stamp,
        }
    return body, "application/json", headers


# -- Resend (Svix) ---------------------------------------------------------------------------------


def resend_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def resend_post(
    signing_secret: str | None,
    *,
    event: str = "email.delivered",
    recipient: str = "ann@example.com",
    message_id: str = "4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
    metadata: Mapping[str, str] | None = None,
) -> Post:
    data: dict[str, Any] = {
        "email_id": message_id,
        "to": [recipient],
        "from": "hello@example.com",
        "subject": "Hi",
        "created_at": "2026-01-01T10:00:00.000Z",
        "headers": [{"name": "X-Metadata", "value": json.dumps(dict(metadata or {}))}],
    }
    if event == "email.bounced":
        data["bounce"] = {"message": "The recipient's email provider sent a hard bounce message"}
    body = json.dumps(
        {"type": event, "created_at": datetime.now(UTC).isoformat(), "data": data}
    ).encode()
    headers: dict[str, str] = {}
    if signing_secret is not None:
        from svix.webhooks import Webhook

        msg_id = f"msg_{secrets.token_hex(8)}"
        now = datetime.now(UTC)
        signature = Webhook(signing_secret).sign(msg_id, now, body.decode())
        headers = {
            "HTTP_SVIX_ID": msg_id,
            "HTTP_SVIX_TIMESTAMP": str(int(now.timestamp())),
            "HTTP_SVIX_SIGNATURE": signature,
        }
    return body, "application/json", headers


# -- Amazon SES via SNS ----------------------------------------------------------------------------


class FakeSNS:
    """Signs SNS messages with a local RSA key; serves its certificate over loopback HTTPS.

    Point ``TENANTMAIL["WEBHOOKS"]`` at it: ``SNS_CERT_URL_PATTERN`` = :attr:`cert_url_pattern`,
    ``SNS_CA_BUNDLE`` = :attr:`ca_bundle_path`.
    """

    def __init__(self) -> None:
        import trustme
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now.replace(year=now.year + 1))
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._ca = trustme.CA()
        self._tmp = tempfile.TemporaryDirectory(prefix="fakesns-")
        self._ca.cert_pem.write_to_path(Path(self._tmp.name) / "ca.pem")
        self._server: http.server.ThreadingHTTPServer | None = None
        self.fetches = 0

    @property
    def ca_bundle_path(self) -> str:
        return str(Path(self._tmp.name) / "ca.pem")

    @property
    def cert_url(self) -> str:
        assert self._server is not None
        return f"https://localhost:{self._server.server_address[1]}/SimpleNotificationService-1.pem"

    @property
    def cert_url_pattern(self) -> str:
        assert self._server is not None
        return rf"^https://localhost:{self._server.server_address[1]}/[^?#]+\.pem$"

    def __enter__(self) -> Self:
        import ssl

        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-pem-file")
                self.send_header("Content-Length", str(len(owner.cert_pem)))
                self.end_headers()
                self.wfile.write(owner.cert_pem)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._tmp.cleanup()

    def sign(self, message: dict[str, Any]) -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        from .sns import string_to_sign

        message = {**message, "SignatureVersion": "2", "SigningCertURL": self.cert_url}
        signature = self._key.sign(string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
        message["Signature"] = base64.b64encode(signature).decode()
        return message


def ses_post(
    sns: FakeSNS | None,
    credential: str | None,
    *,
    event: str = "Delivery",
    recipient: str = "ann@example.com",
    message_id: str = "0100016a-ses-message-id",
    metadata: Mapping[str, str] | None = None,
    topic_arn: str = "arn:aws:sns:us-east-1:123456789012:ses-events",
    bounce_type: str = "Permanent",
) -> Post:
    mail = {
        "timestamp": "2026-01-01T10:00:00.000Z",
        "messageId": message_id,
        "destination": [recipient],
        "headers": [{"name": "X-Metadata", "value": json.dumps(dict(metadata or {}))}],
    }
    ses_event: dict[str, Any] = {"eventType": event, "mail": mail}
    if event == "Bounce":
        ses_event["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": recipient, "diagnosticCode": "smtp; 550"}],
        }
    elif event == "Delivery":
        ses_event["delivery"] = {"recipients": [recipient], "smtpResponse": "250 OK"}
    return sns_notification(sns, credential, ses_event, topic_arn)


def sns_notification(
    sns: FakeSNS | None, credential: str | None, ses_event: Mapping[str, Any], topic_arn: str
) -> Post:
    """An SES event in an SNS ``Notification``, signed by ``sns`` (if given), as SNS posts it."""
    sns_id = f"sns-{secrets.token_hex(8)}"
    message: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": topic_arn,
        "Message": json.dumps(ses_event),
        "Timestamp": "2026-01-01T10:00:01.000Z",
    }
    if sns is not None:
        message = sns.sign(message)
    headers = {"HTTP_X_AMZ_SNS_MESSAGE_TYPE": "Notification", "HTTP_X_AMZ_SNS_MESSAGE_ID": sns_id}
    if credential:
        headers.update(basic_auth(credential))
    return json.dumps(message).encode(), "text/plain; charset=UTF-8", headers
