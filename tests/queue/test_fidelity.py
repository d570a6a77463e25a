"""Everything a message carries survives the outbox (stored as JSON in PostgreSQL and back)."""

from __future__ import annotations

import datetime
import email.policy
from email.message import MIMEPart
from email.mime.base import MIMEBase
from email.mime.text import MIMEText
from typing import Any

import django
import pytest
from anymail.message import AnymailMessage
from anymail.utils import UNSET
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.translation import gettext_lazy

from tenantmail.models import OutboxMessage
from tenantmail.queue import UnstorableMessageError, enqueue
from tenantmail.queue.serialize import dump, load

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def _mime_part() -> Any:
    if django.VERSION >= (6, 0):
        part = MIMEPart(policy=email.policy.default)
        part.set_content(b"\x00\x01binary", maintype="application", subtype="x-thing")
        part.add_header("Content-Disposition", "attachment", filename="thing.bin")
        return part
    return MIMEText("legacy part", "plain", "utf-8")  # a MIMEBase, as Django 5.2 expects


class CustomMessage(AnymailMessage):
    """A subclass with its own constructor: rebuilt without calling it."""

    def __init__(self, order: int) -> None:
        super().__init__(subject=f"Order {order}", to=["buyer@example.com"])
        self.order = order


def full_message() -> AnymailMessage:
    message = AnymailMessage(
        subject="Ünïcode subject",
        body="plain body",
        from_email="Shop <shop@example.com>",
        to=["a@example.com", "B <b@example.com>"],
        cc=["c@example.com"],
        bcc=["d@example.com"],
        reply_to=["r@example.com"],
        headers={"X-Custom": "1", "List-Unsubscribe": "<mailto:u@example.com>"},
        metadata={"order": 42, "nested": {"k": [1, 2.5, None, True]}},
        tags=["welcome", "onboarding"],
        merge_data={"a@example.com": {"name": "A"}},
        merge_global_data={"shop": "Acme"},
        merge_metadata={"a@example.com": {"id": "1"}},
        merge_headers={"a@example.com": {"X-Per": "a"}},
        template_id="tmpl-1",
        esp_extra={"o:testmode": "yes", "raw": b"bytes too"},
        track_opens=True,
        track_clicks=False,
        envelope_sender="bounces@example.com",
        send_at=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    message.attach_alternative("<p>html</p>", "text/html")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    message.attach("blob.bin", b"\x00\xffbinary", "application/octet-stream")
    message.attach(_mime_part())
    message.cid = message.attach_inline_image(PNG, "logo.png")  # type: ignore[attr-defined]
    return message


def roundtrip(message: EmailMessage) -> EmailMessage:
    row = enqueue(message, tenant="acme")
    return load(OutboxMessage.objects.get(pk=row.pk).payload)


ATTRIBUTES = [
    "subject",
    "body",
    "from_email",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "alternatives",
    "metadata",
    "tags",
    "merge_data",
    "merge_global_data",
    "merge_metadata",
    "merge_headers",
    "template_id",
    "esp_extra",
    "track_opens",
    "track_clicks",
    "envelope_sender",
    "send_at",
    "cid",
]


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_each_attribute_round_trips(tenants: Any, name: str) -> None:
    original = full_message()
    restored = roundtrip(original)
    assert type(restored) is AnymailMessage
    assert getattr(restored, name) == getattr(original, name)
    assert type(getattr(restored, name)) is type(getattr(original, name))


def test_headers_round_trip_and_gain_a_stable_message_id(tenants: Any) -> None:
    original = full_message()
    restored = roundtrip(original)
    assert "Message-ID" not in original.extra_headers  # the caller's message is not modified
    assert {k: v for k, v in restored.extra_headers.items() if k != "Message-ID"} == (
        original.extra_headers
    )
    assert restored.extra_headers["Message-ID"] == OutboxMessage.objects.get().message_id


def test_attachments_round_trip_files_inline_images_and_mime_parts(tenants: Any) -> None:
    original = full_message()
    restored = roundtrip(original)
    assert len(restored.attachments) == len(original.attachments) == 4
    for before, after in zip(original.attachments, restored.attachments, strict=True):
        if isinstance(before, MIMEBase | MIMEPart):
            assert type(after).__mro__[1:] == type(before).__mro__[1:] or isinstance(
                after, MIMEBase if isinstance(before, MIMEBase) else MIMEPart
            )
            assert after.as_bytes() == before.as_bytes()
        else:
            assert after == before
            assert type(after) is type(before)


def test_the_rendered_mime_message_is_the_same(tenants: Any) -> None:
    original = full_message()
    original.extra_headers["Date"] = "Wed, 02 Dec 2026 06:00:00 +0000"
    restored = roundtrip(original)
    original.extra_headers["Message-ID"] = restored.extra_headers["Message-ID"]

    def parts(message: EmailMessage) -> list[tuple[str, bytes]]:
        mime = message.message()
        return [
            (part.get_content_type(), part.get_payload(decode=True) or b"")
            for part in mime.walk()
            if not part.is_multipart()
        ]

    assert parts(restored) == parts(original)
    assert restored.message()["Message-ID"] == original.message()["Message-ID"]
    assert restored.message()["Subject"] == original.message()["Subject"]


def test_unset_anymail_attributes_stay_unset(tenants: Any) -> None:
    restored = roundtrip(AnymailMessage("s", "b", "f@example.com", ["t@example.com"]))
    assert restored.tags is UNSET  # type: ignore[attr-defined]
    assert restored.anymail_status.message_id is None  # type: ignore[attr-defined]


def test_plain_django_messages_and_subclasses_round_trip(tenants: Any) -> None:
    plain = EmailMultiAlternatives("s", gettext_lazy("lazy body"), to=["t@example.com"])
    plain.attach_alternative("<p>x</p>", "text/html")
    restored = roundtrip(plain)
    assert type(restored) is EmailMultiAlternatives
    assert restored.body == "lazy body"
    assert restored.alternatives == plain.alternatives
    custom = roundtrip(CustomMessage(7))
    assert type(custom) is CustomMessage
    assert (custom.order, custom.subject) == (7, "Order 7")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda m: setattr(m, "metadata", {1: "int key"}), "message.metadata"),
        (lambda m: setattr(m, "metadata", {"x": float("nan")}), "message.metadata['x']"),
        (lambda m: setattr(m, "esp_extra", {"obj": object()}), "message.esp_extra['obj']"),
        (lambda m: m.attachments.append(("f", {1, 2}, "text/plain")), "message.attachments"),
    ],
)
def test_what_cannot_be_stored_is_an_error_at_enqueue(mutate: Any, where: str) -> None:
    message = AnymailMessage("s", "b", "f@example.com", ["t@example.com"])
    mutate(message)
    with pytest.raises(UnstorableMessageError) as caught:
        dump(message)
    assert where in str(caught.value)


def test_local_classes_and_non_messages_are_refused() -> None:
    class Local(EmailMessage):
        pass

    with pytest.raises(UnstorableMessageError, match="module level"):
        dump(Local("s", "b", to=["t@example.com"]))
    with pytest.raises(UnstorableMessageError, match="EmailMessage"):
        dump("not a message")  # type: ignore[arg-type]


def test_unknown_payloads_are_rejected_when_loading() -> None:
    with pytest.raises(ValueError, match="format"):
        load({"format": 99})
    payload = dump(EmailMessage("s", "b", to=["t@example.com"]))
    payload["attrs"]["body"] = {"__bogus__": 1}
    with pytest.raises(ValueError, match="unknown stored value"):
        load(payload)


def test_the_full_message_is_accepted_by_a_real_anymail_backend_after_the_round_trip(
    tenants: Any, fake_esp: Any
) -> None:
    from tenantmail.queue.worker import deliver

    row = enqueue(full_message(), tenant="acme")
    assert deliver(row.pk) == "sent", OutboxMessage.objects.get(pk=row.pk).last_error
    (received,) = fake_esp.messages
    assert received.subject == "Ünïcode subject"
    assert received.metadata["order"] == "42"
    assert received.to == ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
