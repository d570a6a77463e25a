"""Enqueueing: the tenant is captured now, nothing secret is stored, commit decides."""

from __future__ import annotations

from typing import Any

import django
import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tasks_db.models import DBTaskResult
from django_tenants.utils import schema_context

from tenantmail import sending_as
from tenantmail.exceptions import UnknownTenantError
from tenantmail.models import OutboxMessage
from tenantmail.queue import (
    QueuedBackend,
    SecretOverrideError,
    UnstorableMessageError,
    enqueue,
    enqueueing,
)
from tenantmail.queue import signals as queue_signals
from tests.conftest import ACME_KEY, PLATFORM_KEY

pytestmark = pytest.mark.usefixtures("queue_settings")


def _message(subject: str = "Hi") -> EmailMessage:
    return EmailMessage(subject, "body", "from@example.com", ["to@example.com"])


def test_enqueue_returns_the_stored_row_with_the_explicit_tenant(
    tenants: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        row = enqueue(_message(), tenant=tenants.acme)
    assert isinstance(row, OutboxMessage)
    row.refresh_from_db()
    assert row.tenant_schema == "acme"
    assert row.status == OutboxMessage.Status.QUEUED
    assert row.attempts == 0
    assert row.sent_at is None
    assert row.esp_message_id == ""
    assert row.message_id.startswith("<")
    assert row.message_id.endswith(">")
    task = DBTaskResult.objects.get()  # a drain for slot 0, never the message or its id
    assert task.args_kwargs == {"args": [0], "kwargs": {}}
    assert task.task_path == "tenantmail.queue.tasks.drain_outbox"


@pytest.mark.parametrize("how", ["sending_as", "schema_context", "tenant_name"])
def test_the_tenant_is_captured_at_enqueue_like_tenant_backend(
    tenants: Any, how: str, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        if how == "sending_as":
            with sending_as(tenants.globex):
                row = enqueue(_message())
        elif how == "schema_context":
            with schema_context("globex"):
                row = enqueue(_message())
        else:
            row = enqueue(_message(), tenant="globex")
    assert OutboxMessage.objects.get(pk=row.pk).tenant_schema == "globex"


def test_explicit_tenant_beats_context_and_public_schema_is_platform_mail(tenants: Any) -> None:
    with sending_as(tenants.globex):
        assert enqueue(_message(), tenant="acme").tenant_schema == "acme"
    with schema_context("public"):
        assert enqueue(_message()).tenant_schema == ""


def test_an_unknown_tenant_is_refused_at_enqueue(tenants: Any) -> None:
    with pytest.raises(UnknownTenantError, match="nosuch"):
        enqueue(_message(), tenant="nosuch")
    assert not OutboxMessage.objects.exists()


def test_queued_backend_counts_and_enqueues_on_commit_only(
    tenants: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    backend = QueuedBackend(tenant="acme")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert backend.send_messages([_message("a"), _message("b")]) == 2
        assert backend.send_messages([]) == 0
    assert len(callbacks) == 1  # one callback kicks a drain for the batch
    assert not DBTaskResult.objects.exists()  # nothing is enqueued before the commit
    callbacks[0]()
    assert DBTaskResult.objects.count() == 1  # one drain task sends both
    assert sorted(OutboxMessage.objects.values_list("subject", flat=True)) == ["a", "b"]


def test_a_rolled_back_transaction_queues_nothing(tenants: Any) -> None:
    def queue_then_fail() -> None:
        with transaction.atomic():
            enqueue(_message(), tenant="acme")
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        queue_then_fail()
    assert not OutboxMessage.objects.exists()
    assert not DBTaskResult.objects.exists()


def test_send_mail_through_the_queued_backend(
    tenants: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    if hasattr(settings, "MAILERS"):
        settings.MAILERS = {
            **settings.MAILERS,
            "default": {"BACKEND": "tenantmail.queue.QueuedBackend"},
        }
    else:
        settings.EMAIL_BACKEND = "tenantmail.queue.QueuedBackend"
    with django_capture_on_commit_callbacks(execute=True), sending_as("hooli"):
        assert mail.send_mail("Queued", "body", None, ["to@example.com"]) == 1
    row = OutboxMessage.objects.get()
    assert (row.tenant_schema, row.subject) == ("hooli", "Queued")


@pytest.mark.parametrize("option", ["api_key", "password", "server_token", "secret_key"])
def test_secret_overrides_are_refused_and_never_stored(tenants: Any, option: str) -> None:
    with pytest.raises(SecretOverrideError, match=option) as caught:
        QueuedBackend(**{option: ACME_KEY})
    assert ACME_KEY not in str(caught.value)
    with pytest.raises(SecretOverrideError, match=option) as caught:
        enqueue(_message(), tenant="acme", options={option: PLATFORM_KEY})
    assert PLATFORM_KEY not in str(caught.value)
    assert not OutboxMessage.objects.exists()


def test_none_valued_overrides_carry_nothing_and_are_accepted(tenants: Any) -> None:
    # What send_mail() passes to get_connection() on Django < 6.1.
    backend = QueuedBackend(username=None, password=None, fail_silently=False)
    assert backend.options == {}


def test_non_secret_overrides_are_fine(tenants: Any) -> None:
    backend = QueuedBackend(requests_timeout=7, alias="queued")
    assert "requests_timeout" in repr(backend)
    assert backend.send_messages([_message()]) == 1
    row = OutboxMessage.objects.get()
    assert (row.mailer, row.options) == ("", {"requests_timeout": 7})


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_a_mailer_alias_is_fine(tenants: Any, settings: Any) -> None:
    settings.MAILERS = {
        **settings.MAILERS,
        "tenants": {"BACKEND": "tenantmail.backends.TenantBackend"},
    }
    assert QueuedBackend(mailer="tenants").send_messages([_message()]) == 1
    assert OutboxMessage.objects.get().mailer == "tenants"


def test_unstorable_messages_fail_at_enqueue_naming_the_part(tenants: Any) -> None:
    message = _message()
    message.extra_headers["X-Thing"] = object()  # type: ignore[assignment]
    with pytest.raises(UnstorableMessageError, match=r"extra_headers\['X-Thing'\]"):
        QueuedBackend().send_messages([message])
    assert not OutboxMessage.objects.exists()


def test_message_queued_signal_names_the_tenant(tenants: Any) -> None:
    seen: list[tuple[str | None, int]] = []

    def receiver(*, outbox: OutboxMessage, tenant: str | None, **kwargs: Any) -> None:
        seen.append((tenant, outbox.pk))

    queue_signals.message_queued.connect(receiver)
    try:
        row = enqueue(_message(), tenant="acme")
        platform = enqueue(_message(), tenant="public")
    finally:
        queue_signals.message_queued.disconnect(receiver)
    assert seen == [("acme", row.pk), (None, platform.pk)]


def test_a_burst_sinks_behind_other_tenants_in_priority(tenants: Any, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {"FAIR_SHARE": 3}}
    burst = QueuedBackend(tenant="acme")
    burst.send_messages([_message(f"a{i}") for i in range(7)])
    burst.send_messages([_message("a7")])
    other = enqueue(_message("g"), tenant="globex")
    priorities = dict(OutboxMessage.objects.values_list("subject", "priority"))
    assert [priorities[f"a{i}"] for i in range(8)] == [0, 0, 0, -1, -1, -1, -2, -2]
    assert other.priority == 0


def test_a_preset_message_id_is_kept(tenants: Any) -> None:
    message = _message()
    message.extra_headers["message-id"] = "<fixed@example.com>"
    assert enqueue(message, tenant="acme").message_id == "<fixed@example.com>"


def test_the_public_names_resolve_after_the_submodules_are_imported() -> None:
    import tenantmail.queue
    import tenantmail.queue.backend
    from tenantmail.queue import QueuedBackend as Backend
    from tenantmail.queue import enqueue as enqueue_function

    assert callable(enqueue_function)
    assert enqueue_function.__name__ == "enqueue"
    assert Backend.__name__ == "QueuedBackend"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tenantmail.queue.nothing  # noqa: B018


def test_a_batch_larger_than_one_insert_keeps_counting_levels(
    tenants: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {"FAIR_SHARE": 2}}
    monkeypatch.setattr(enqueueing, "INSERT_BATCH", 3)
    rows = QueuedBackend(tenant="acme").send_messages([_message(f"a{i}") for i in range(10)])
    assert rows == 10
    priorities = dict(OutboxMessage.objects.values_list("subject", "priority"))
    assert [priorities[f"a{i}"] for i in range(10)] == [0, 0, -1, -1, -2, -2, -3, -3, -4, -4]


def test_the_deepest_level_is_capped_and_levels_follow_what_still_waits(
    tenants: Any, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {"FAIR_SHARE": 1}}
    rows = enqueueing.enqueue_many([_message(f"a{i}") for i in range(103)], tenant="acme")
    assert [r.priority for r in rows[-4:]] == [-99, -100, -100, -100]
    assert rows[-1].priority == OutboxMessage.objects.get(pk=rows[-1].pk).priority
    OutboxMessage.objects.all().update(status=OutboxMessage.Status.SENT)
    assert enqueue(_message(), tenant="acme").priority == 0  # nothing waits: back at the top


def test_enqueue_is_one_statement_whatever_the_backlog(tenants: Any) -> None:
    enqueueing.enqueue_many([_message() for _ in range(300)], tenant="acme")
    with CaptureQueriesContext(connection) as queries:
        enqueue(_message(), tenant="acme")
    statements = [q["sql"] for q in queries if not q["sql"].startswith("SET search_path")]
    assert len(statements) == 1, statements  # the task's INSERT follows on commit
    assert statements[0].lstrip().startswith("WITH level")
