"""What a real ``db_worker`` process actually sent, as the fake ESP received it.

test_fidelity.py checks the stored message round-trips in process; this sends one message with
every part through the outbox, a separate worker process, Anymail's real Mailgun and Postmark
backends and HTTP, and checks each part at the far side: attachments (name, type, bytes),
inline images (content-id), a ``MIMEBase`` part, headers, cc/bcc/reply-to, bodies, metadata,
tags, tracking, and the outbox's stable Message-ID.
"""

from __future__ import annotations

import email.policy
import hashlib
from collections import Counter
from email.message import MIMEPart
from email.mime.text import MIMEText
from typing import Any

import django
from anymail.message import AnymailMessage

from tenantmail.models import OutboxMessage
from tenantmail.queue.enqueueing import enqueue_many
from tenantmail.testing import FakeESP, ReceivedAttachment, ReceivedMessage
from tests.conftest import ACME_KEY, GLOBEX_TOKEN
from tests.queue.conftest import Workers, committed, wait_until

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
CSV = "a,b\n1,2\n"
BLOB = b"\x00\xffbinary"


def _part() -> tuple[Any, ReceivedAttachment]:
    """A MIME part attachment (what each Django version accepts) and how it should arrive."""
    if django.VERSION >= (6, 0):
        part = MIMEPart(policy=email.policy.default)
        part.set_content(b"\x00\x01part", maintype="application", subtype="x-thing")
        part.add_header("Content-Disposition", "attachment", filename="thing.bin")
        return part, ReceivedAttachment.of("thing.bin", "application/x-thing", b"\x00\x01part")
    legacy = MIMEText("legacy part", "plain", "utf-8")
    legacy.add_header("Content-Disposition", "attachment", filename="legacy.txt")
    return legacy, ReceivedAttachment.of("legacy.txt", "text/plain", b"legacy part")


def _message(subject: str) -> tuple[AnymailMessage, set[ReceivedAttachment]]:
    part, part_arrives = _part()
    message = AnymailMessage(
        subject=subject,
        body="plain body",
        to=["a@example.com"],
        cc=["C <c@example.com>"],
        bcc=["d@example.com"],
        reply_to=["r@example.com"],
        headers={"X-Custom": "1", "List-Unsubscribe": "<mailto:u@example.com>"},
        metadata={"order": "42"},
        tags=["welcome"],
        track_opens=True,
        track_clicks=False,
    )
    message.attach_alternative("<p>html body</p>", "text/html")
    message.attach("report.csv", CSV, "text/csv")
    message.attach("blob.bin", BLOB, "application/octet-stream")
    message.attach(part)
    cid = message.attach_inline_image(PNG, "logo.png")
    expected = {
        ReceivedAttachment.of("report.csv", "text/csv", CSV.encode()),
        ReceivedAttachment.of("blob.bin", "application/octet-stream", BLOB),
        part_arrives,
    }
    inline = ReceivedAttachment(
        "", "image/png", len(PNG), hashlib.sha256(PNG).hexdigest(), content_id=cid
    )
    return message, {*expected, inline}


def _same_attachments(
    got: tuple[ReceivedAttachment, ...], expected: set[ReceivedAttachment]
) -> None:
    # An inline part's file name differs by API (Mailgun names it by its cid): compare the rest.
    def key(a: ReceivedAttachment) -> tuple[Any, ...]:
        return (
            a.filename if a.content_id is None else "",
            a.content_type,
            a.size,
            a.sha256,
            a.content_id,
        )

    assert Counter(map(key, got)) == Counter(map(key, expected)), got


def _check(received: ReceivedMessage, expected: set[ReceivedAttachment], message_id: str) -> None:
    assert received.text == "plain body"
    assert received.html == "<p>html body</p>"
    assert received.cc == ("c@example.com",)
    assert received.bcc == ("d@example.com",)
    assert received.reply_to == ("r@example.com",)
    assert set(received.to) == {"a@example.com", "c@example.com", "d@example.com"}
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["x-custom"] == "1"
    assert headers["list-unsubscribe"] == "<mailto:u@example.com>"
    assert headers["message-id"] == message_id  # the outbox's stable Message-ID
    assert received.metadata["order"] == "42"
    assert received.tags == ("welcome",)
    assert received.tracking == {"opens": True, "clicks": False}
    _same_attachments(received.attachments, expected)


def test_a_worker_process_sends_every_part_of_the_message(
    workers: Workers, fake_esp: FakeESP
) -> None:
    expected: dict[str, set[ReceivedAttachment]] = {}
    rows: dict[str, OutboxMessage] = {}
    for tenant in ("acme", "globex"):  # Anymail's Mailgun and Postmark backends
        message, expected[tenant] = _message(f"full-{tenant}")
        (rows[tenant],) = committed(enqueue_many, [message], tenant=tenant)
    workers.start()
    wait_until(
        lambda: OutboxMessage.objects.filter(status=OutboxMessage.Status.SENT).count() == 2,
        30,
        f"2 sent\n{workers.logs()}",
    )
    by_subject = {m.subject: m for m in fake_esp.messages}
    acme, globex = by_subject["full-acme"], by_subject["full-globex"]
    assert (acme.esp, acme.credential) == ("mailgun", ACME_KEY)
    assert (globex.esp, globex.credential) == ("postmark", GLOBEX_TOKEN)
    _check(acme, expected["acme"], rows["acme"].message_id)
    _check(globex, expected["globex"], rows["globex"].message_id)
