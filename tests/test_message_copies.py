"""One send's defaults are never visible to another send: tenants' defaults go on copies.

Regression tests for the audit's "messages are mutated in place" findings: a batch that fails
halfway, the same object sent for two tenants at once, and a memoized config sharing the tenant
instance's ``mail_defaults`` dict. Also what the caller's message holds after a send (as with a
plain Anymail backend) and what ``mail.outbox`` holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage, AnymailStatus
from anymail.signals import pre_send as anymail_pre_send
from anymail.utils import UNSET
from django.core import mail
from django.core.mail import EmailMessage
from django.db import connection

from tenantmail import mailer
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, Tenants
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

TEST_BACKEND = "anymail.backends.test.EmailBackend"
PLATFORM_FROM = "platform@saas.example"
ACME_DEFAULTS: dict[str, Any] = {
    "from_email": "hello@acme.example",
    "reply_to": "support@acme.example",
    "headers": {"X-Acme": "1"},
    "tags": ["acme"],
    "metadata": {"plan": "acme-pro"},
    "esp_extra": {"o:testmode": "yes"},
    "track_opens": True,
}
GLOBEX_DEFAULTS: dict[str, Any] = {
    "from_email": "hi@globex.example",
    "headers": {"X-Globex": "1"},
    "tags": ["globex"],
    "metadata": {"plan": "globex-basic"},
}


def message(subject: str = "Hello", **kwargs: Any) -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"], **kwargs)


def with_defaults(tenant: Client, defaults: dict[str, Any]) -> Client:
    tenant.mail_defaults = defaults
    tenant.confirm_mail_endpoint_change()  # moved on purpose
    tenant.save()
    return Client.objects.get(pk=tenant.pk)


def own_state(msg: EmailMessage) -> dict[str, Any]:
    skip = {"anymail_status", "anymail_test_params"}
    return {k: v for k, v in vars(msg).items() if k not in skip}


@contextmanager
def on_anymail_pre_send(receiver: Callable[..., None]) -> Iterator[None]:
    anymail_pre_send.connect(receiver, weak=False)
    try:
        yield
    finally:
        anymail_pre_send.disconnect(receiver)


# -- a batch that fails halfway ------------------------------------------------------------


def test_batch_failing_on_its_second_message_leaves_the_first_untouched(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(tenants.acme, ACME_DEFAULTS)
    first = AnymailMessage("one", "body", to=["customer@example.com"])
    before = own_state(first)
    broken = message("two")
    broken.metadata = ["not", "a", "mapping"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        mailer(tenant=acme).send_messages([first, broken])
    assert own_state(first) == before
    assert (first.from_email, first.extra_headers, first.reply_to) == (PLATFORM_FROM, {}, [])
    assert (first.tags, first.metadata, first.esp_extra) == (UNSET, UNSET, UNSET)

    # Re-sent as another tenant, it carries none of acme's values.
    mailer(tenant=tenants.globex).send_messages([first])
    (received,) = fake_esp.wait_for(1)
    assert (received.credential, received.from_email) == (GLOBEX_TOKEN, PLATFORM_FROM)
    assert received.metadata == {"tenant": "globex"}
    assert own_state(first) == before


# -- the same object, two tenants, at the same time ----------------------------------------


def test_one_message_sent_concurrently_for_two_tenants_never_mixes_them(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(tenants.acme, ACME_DEFAULTS)
    globex = with_defaults(tenants.globex, GLOBEX_DEFAULTS)
    shared = message("shared object")
    before = own_state(shared)
    # Both sends have applied their defaults before either reaches the ESP.
    barrier = threading.Barrier(2, timeout=10)
    seen: dict[str, tuple[str, object, object]] = {}

    def rendezvous(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        barrier.wait()
        tenant = message.metadata["tenant"]  # type: ignore[attr-defined]
        seen[tenant] = (message.from_email, message.extra_headers, message.tags)  # type: ignore[attr-defined]

    errors: list[BaseException] = []

    def send(tenant: Client) -> None:
        try:
            mailer(tenant=tenant).send_messages([shared])
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    with on_anymail_pre_send(rendezvous):
        threads = [threading.Thread(target=send, args=(t,)) for t in (acme, globex)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    assert errors == []
    assert seen == {
        "acme": ("hello@acme.example", {"X-Acme": "1"}, ["acme"]),
        "globex": ("hi@globex.example", {"X-Globex": "1"}, ["globex"]),
    }
    received = {m.credential: m for m in fake_esp.wait_for(2)}
    assert received[ACME_KEY].from_email == "hello@acme.example"
    assert received[ACME_KEY].metadata == {"plan": "acme-pro", "tenant": "acme"}
    assert received[GLOBEX_TOKEN].from_email == "hi@globex.example"
    assert received[GLOBEX_TOKEN].metadata == {"plan": "globex-basic", "tenant": "globex"}
    assert own_state(shared) == before
    assert shared.from_email == PLATFORM_FROM


# -- the memoized config holds its own frozen defaults -------------------------------------


def test_unsaved_in_place_edit_of_mail_defaults_never_reaches_a_send(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(tenants.acme, {"from_email": "hello@acme.example", "tags": ["a"]})
    mailer(tenant=acme).send_messages([message("one")])  # memoizes the config
    # Edited in place and never saved (nor validated): later sends must not see it.
    acme.mail_defaults["from_email"] = "ceo@evil.example"
    acme.mail_defaults["tags"].append("injected")
    fresh = Client.objects.get(pk=acme.pk)
    assert fresh.mail_defaults == {"from_email": "hello@acme.example", "tags": ["a"]}
    mailer(tenant=fresh).send_messages([message("two")])
    first, second = fake_esp.wait_for(2)
    assert first.from_email == second.from_email == "hello@acme.example"


def test_config_defaults_are_read_only(tenants: Tenants) -> None:
    acme = with_defaults(tenants.acme, {"tags": ["a"], "esp_extra": {"nested": {"k": [1]}}})
    config = mailer(tenant=acme).resolve()
    with pytest.raises(TypeError):
        config.defaults["tags"] = ["b"]  # type: ignore[index]
    assert config.defaults["tags"] == ("a",)
    with pytest.raises(TypeError):
        config.defaults["esp_extra"]["nested"]["k"] = 2
    assert acme.mail_defaults["esp_extra"] is not config.defaults["esp_extra"]


def test_nested_esp_extra_defaults_reach_the_esp_as_plain_fresh_containers(
    tenants: Tenants, settings: Any
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "postmark", TEST_BACKEND],
    }
    acme = tenants.acme
    acme.mail_backend = TEST_BACKEND
    acme.mail_options = {}
    acme = with_defaults(acme, {"esp_extra": {"asm": {"groups": [1, 2]}}, "metadata": {"a": "b"}})
    params = []
    for subject in ("one", "two"):
        msg = message(subject)
        assert mailer(tenant=acme).send_messages([msg]) == 1
        params.append(msg.anymail_test_params)  # type: ignore[attr-defined]
    assert params[0]["asm"] == {"groups": [1, 2]}
    assert type(params[0]["asm"]) is dict
    assert type(params[0]["asm"]["groups"]) is list
    params[0]["asm"]["groups"].append(3)  # a backend mutating what it was given ...
    assert params[1]["asm"] == {"groups": [1, 2]}  # ... does not reach the next send
    assert mailer(tenant=acme).resolve().defaults["esp_extra"]["asm"]["groups"] == (1, 2)


# -- what the caller gets back ---------------------------------------------------------------


def test_the_caller_gets_anymails_status_and_a_pre_send_receivers_changes(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(tenants.acme, ACME_DEFAULTS)

    def rewrite(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        message.subject = "rewritten by a receiver"
        message.metadata = {"receiver": "wins on the wire"}  # type: ignore[attr-defined]

    msg = message("original")
    with on_anymail_pre_send(rewrite):
        assert mailer(tenant=acme).send_messages([msg]) == 1
    status = msg.anymail_status  # type: ignore[attr-defined]
    assert isinstance(status, AnymailStatus)
    assert status.status == {"queued"}
    assert status.message_id
    assert status.recipients["customer@example.com"].status == "queued"
    # What a plain Anymail backend leaves on the message comes back ...
    assert msg.subject == "rewritten by a receiver"
    # ... but the attributes the defaults own keep the caller's values.
    assert msg.from_email == PLATFORM_FROM
    assert "metadata" not in vars(msg)
    (received,) = fake_esp.wait_for(1)
    assert received.subject == "rewritten by a receiver"


def test_a_batch_that_fails_halfway_still_reports_the_first_messages_status(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    acme = with_defaults(tenants.acme, ACME_DEFAULTS)
    first, second = message("one"), message("two")
    calls = []

    def fail_second(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        calls.append(message.subject)
        if len(calls) == 2:
            fake_esp.fail_next(500)

    with on_anymail_pre_send(fail_second), pytest.raises(AnymailAPIError) as raised:
        mailer(tenant=acme).send_messages([first, second])
    assert first.anymail_status.status == {"queued"}  # type: ignore[attr-defined]
    assert second.anymail_status.status is None  # type: ignore[attr-defined]
    # The error names the caller's message, not the copy carrying acme's defaults.
    assert raised.value.email_message is second
    assert (first.from_email, second.from_email) == (PLATFORM_FROM, PLATFORM_FROM)


def test_outbox_holds_what_was_sent_and_the_caller_keeps_its_message(
    tenants: Tenants, settings: Any
) -> None:
    # Like Django's locmem backend (which appends a deep copy), mail.outbox shows the message
    # as it was sent -- with the tenant's defaults -- so a user's test can assert on them.
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "postmark", TEST_BACKEND],
    }
    acme = tenants.acme
    acme.mail_backend = TEST_BACKEND
    acme.mail_options = {}
    acme = with_defaults(acme, ACME_DEFAULTS)
    mail.outbox = []
    msg = message()
    assert mailer(tenant=acme).send_messages([msg]) == 1
    (sent,) = mail.outbox
    assert sent is not msg
    assert (sent.from_email, sent.metadata) == (  # type: ignore[attr-defined]
        "hello@acme.example",
        {"plan": "acme-pro", "tenant": "acme"},
    )
    assert (sent.subject, sent.to, sent.body) == (msg.subject, msg.to, msg.body)
    assert msg.from_email == PLATFORM_FROM
    # Anymail's own results are the caller's too.
    assert msg.anymail_test_params is sent.anymail_test_params  # type: ignore[attr-defined]
    assert msg.anymail_status.message_id == 0  # type: ignore[attr-defined]


def test_messages_without_defaults_to_apply_are_sent_as_they_are(
    tenants: Tenants, settings: Any
) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {"BACKEND": TEST_BACKEND},
        "METADATA_KEY": None,
    }
    mail.outbox = []
    platform_msg, initech_msg = message("platform"), message("initech")
    mailer().send_messages([platform_msg])
    mailer(tenant=tenants.initech).send_messages([initech_msg])  # no defaults, no trace
    assert mail.outbox[0] is platform_msg
    assert mail.outbox[1] is initech_msg


class CopyingMessage(EmailMessage):
    """A message class with its own idea of copying, which our copies must respect."""

    copies = 0

    def __copy__(self) -> CopyingMessage:
        type(self).copies += 1
        clone = CopyingMessage.__new__(CopyingMessage)
        clone.__dict__.update(self.__dict__)
        clone.copied = True  # type: ignore[attr-defined]
        return clone


def test_a_message_class_that_customises_copying_is_copied_its_way(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(tenants.acme, ACME_DEFAULTS)
    msg = CopyingMessage("custom", "body", to=["customer@example.com"])
    copies_before = CopyingMessage.copies
    assert mailer(tenant=acme).send_messages([msg]) == 1
    assert CopyingMessage.copies == copies_before + 1
    (received,) = fake_esp.wait_for(1)
    assert received.from_email == "hello@acme.example"
    assert msg.from_email == PLATFORM_FROM
    assert msg.copied is True  # type: ignore[attr-defined] - what the send added comes back


def test_a_changed_default_from_email_setting_is_seen_by_the_next_send(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    acme = with_defaults(tenants.acme, {"from_email": "hello@acme.example"})
    mailer(tenant=acme).send_messages([message("before")])
    settings.DEFAULT_FROM_EMAIL = "noreply@saas.example"
    # Django fills in the new DEFAULT_FROM_EMAIL: it still counts as unset.
    mailer(tenant=acme).send_messages([message("after")])
    explicit = message("explicit", from_email=PLATFORM_FROM)  # now an explicit choice
    mailer(tenant=acme).send_messages([explicit])
    before, after, chosen = fake_esp.wait_for(3)
    assert before.from_email == after.from_email == "hello@acme.example"
    assert chosen.from_email == PLATFORM_FROM


def test_empty_tag_and_esp_extra_defaults_change_nothing(tenants: Tenants, settings: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "postmark", TEST_BACKEND],
        "METADATA_KEY": None,
    }
    acme = tenants.acme
    acme.mail_backend = TEST_BACKEND
    acme.mail_options = {}
    acme = with_defaults(acme, {"tags": [], "esp_extra": {}})
    mail.outbox = []
    msg = message()
    assert mailer(tenant=acme).send_messages([msg]) == 1
    assert mail.outbox == [msg]  # nothing to apply: sent as it is, not copied
