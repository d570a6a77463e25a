"""The worker side, in process: claim, send as the tenant, classify failures, recover."""

from __future__ import annotations

import datetime
from io import StringIO
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tenantmail.models import OutboxMessage
from tenantmail.queue import enqueue
from tenantmail.queue import signals as queue_signals
from tenantmail.queue.recovery import maybe_recover, recover_stale
from tenantmail.queue.worker import claim, deliver
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, PLATFORM_KEY, acme_options
from tests.queue.conftest import deliveries

pytestmark = pytest.mark.usefixtures("queue_settings")

Status = OutboxMessage.Status


def _queue(tenant: str = "acme", subject: str = "Hi") -> OutboxMessage:
    return enqueue(EmailMessage(subject, "body", None, ["to@example.com"]), tenant=tenant)


@pytest.fixture
def outcomes() -> Any:
    seen: list[tuple[str, str | None, int]] = []
    receivers = {}
    for name in ("message_sent", "message_retrying", "message_failed"):

        def receiver(*, outbox: OutboxMessage, tenant: str | None, _n: str = name, **kw: Any):
            seen.append((_n, tenant, outbox.pk))

        receivers[name] = receiver
        getattr(queue_signals, name).connect(receiver)
    yield seen
    for name, receiver in receivers.items():
        getattr(queue_signals, name).disconnect(receiver)


def test_a_queued_message_leaves_through_its_tenants_account(
    tenants: Any, fake_esp: FakeESP, outcomes: Any
) -> None:
    row = _queue("acme")
    platform = _queue("public")
    assert deliver(row.pk) == "sent"
    assert deliver(platform.pk) == "sent"
    acme, plat = fake_esp.messages
    assert (acme.credential, acme.sender_domain, acme.metadata) == (
        ACME_KEY,
        "mg.acme.example",
        {"tenant": "acme"},
    )
    assert plat.credential == PLATFORM_KEY
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (Status.SENT, 1, "")
    assert row.sent_at is not None
    assert row.esp_message_id == acme.message_id
    assert outcomes == [("message_sent", "acme", row.pk), ("message_sent", None, platform.pk)]


def test_the_key_valid_at_send_time_is_used(tenants: Any, fake_esp: FakeESP, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "TENANT_CACHE_SECONDS": 0}
    row = _queue("acme")
    tenants.acme.mail_options = acme_options(fake_esp, api_key="key-acme-rotated-99999999")
    tenants.acme.save()
    assert deliver(row.pk) == "sent"
    assert [m.credential for m in fake_esp.messages] == ["key-acme-rotated-99999999"]


def test_a_claimed_row_is_not_claimed_twice_until_its_lease_expires(tenants: Any) -> None:
    row = _queue()
    first = claim(row.pk)
    assert first is not None
    assert first.status == Status.SENDING
    assert claim(row.pk) is None
    assert deliver(row.pk) == "skipped"
    later = timezone.now() + datetime.timedelta(seconds=3)
    second = claim(row.pk, now=later)
    assert second is not None
    assert second.attempts == 2
    assert second.claim_token != first.claim_token


def test_a_row_not_yet_due_is_not_claimed(tenants: Any) -> None:
    row = enqueue(
        EmailMessage("later", "b", to=["t@example.com"]),
        tenant="acme",
        run_after=timezone.now() + datetime.timedelta(hours=1),
    )
    assert deliver(row.pk) == "skipped"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried_with_backoff(
    tenants: Any, fake_esp: FakeESP, outcomes: Any, status: int
) -> None:
    row = _queue()
    fake_esp.fail_next(status)
    before = timezone.now()
    assert deliver(row.pk) == "retrying"
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.QUEUED, 1)
    assert str(status) in row.last_error
    # FAST_QUEUE: 0.2 s base with equal jitter -> 0.1..0.2 s
    delay = (row.next_attempt_at - before).total_seconds()
    assert 0.09 <= delay <= 0.5
    retry_task = deliveries().get()  # a delayed drain, no slot
    assert retry_task.args_kwargs["args"] == [None]
    assert retry_task.run_after == row.next_attempt_at
    assert outcomes == [("message_retrying", "acme", row.pk)]
    OutboxMessage.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert deliver(row.pk) == "sent"
    assert len(fake_esp.messages) == 1


def test_a_connection_reset_is_transient(tenants: Any, fake_esp: FakeESP) -> None:
    row = _queue()
    fake_esp.reset_next()
    assert deliver(row.pk) == "retrying"


@pytest.mark.parametrize("status", [400, 401, 404])
def test_permanent_errors_fail_at_once(
    tenants: Any, fake_esp: FakeESP, outcomes: Any, status: int
) -> None:
    row = _queue()
    fake_esp.fail_next(status)
    assert deliver(row.pk) == "failed"
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 1)
    assert not deliveries().exists()
    assert outcomes == [("message_failed", "acme", row.pk)]


def test_max_attempts_ends_retries(tenants: Any, fake_esp: FakeESP, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {"MAX_ATTEMPTS": 2}}
    row = _queue()
    fake_esp.fail_next(500, count=2)
    assert deliver(row.pk) == "retrying"
    OutboxMessage.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert deliver(row.pk) == "failed"
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 2)


def test_a_deleted_tenant_fails_at_once_naming_it(tenants: Any, outcomes: Any) -> None:
    row = _queue("globex")
    type(tenants.globex).objects.filter(pk=tenants.globex.pk).delete()
    assert deliver(row.pk) == "failed"
    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert "globex" in row.last_error
    assert "UnknownTenantError" in row.last_error


def test_the_stored_error_never_holds_a_secret(tenants: Any, fake_esp: FakeESP) -> None:
    # Platform mail: the platform's own endpoint's answer is quoted in the error, so the
    # stored copy must be masked (a tenant endpoint's answer is withheld altogether: below).
    row = enqueue(EmailMessage("Hi", "body", None, ["to@example.com"]), tenant="public")
    fake_esp.fail_next(400, body=f'{{"message": "bad key {PLATFORM_KEY}"}}')
    deliver(row.pk)
    row.refresh_from_db()
    assert "bad key" in row.last_error
    assert PLATFORM_KEY not in row.last_error
    assert "…0000" in row.last_error  # masked, still recognisable


def test_a_tenant_endpoints_answer_is_not_stored(tenants: Any, fake_esp: FakeESP) -> None:
    row = _queue()
    fake_esp.fail_next(400, body=f'{{"message": "bad key {ACME_KEY}"}}')
    deliver(row.pk)
    row.refresh_from_db()
    assert "bad key" not in row.last_error
    assert ACME_KEY not in row.last_error
    assert "400" in row.last_error


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_a_mailers_alias_sends_through_that_tenant_backend(
    tenants: Any, fake_esp: FakeESP, settings: Any
) -> None:
    settings.MAILERS = {
        **settings.MAILERS,
        "tenants": {"BACKEND": "tenantmail.backends.TenantBackend"},
    }
    row = enqueue(EmailMessage("s", "b", to=["t@example.com"]), tenant="acme", mailer="tenants")
    assert deliver(row.pk) == "sent"
    assert fake_esp.messages[0].credential == ACME_KEY
    # Refused at enqueue; and if MAILERS changes after it, in the worker too.
    with pytest.raises(
        ImproperlyConfigured, match=r"must be a tenantmail\.backends\.TenantBackend"
    ):
        enqueue(EmailMessage("s", "b", to=["t@example.com"]), tenant="acme", mailer="admin")
    bad = enqueue(EmailMessage("s", "b", to=["t@example.com"]), tenant="acme", mailer="tenants")
    settings.MAILERS = {**settings.MAILERS, "tenants": settings.MAILERS["admin"]}
    assert deliver(bad.pk) == "failed"
    bad.refresh_from_db()
    assert "must be a tenantmail.backends.TenantBackend" in bad.last_error


def test_recovery_requeues_rows_whose_lease_expired(
    tenants: Any, outcomes: Any, django_capture_on_commit_callbacks: Any
) -> None:
    row = _queue()
    claim(row.pk)
    DBTaskResult.objects.all().delete()
    assert recover_stale() == 0  # the lease is still running
    later = timezone.now() + datetime.timedelta(seconds=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert recover_stale(now=later) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.claim_token) == (Status.QUEUED, 1, "")
    assert "lease expired" in row.last_error
    assert deliveries().get().args_kwargs["args"] == [0]  # a drain on slot 0
    assert recover_stale(now=later) == 0  # idempotent


def test_recovery_fails_a_message_that_killed_every_attempt(tenants: Any, outcomes: Any) -> None:
    row = _queue()
    OutboxMessage.objects.filter(pk=row.pk).update(
        status=Status.SENDING, attempts=4, lease_expires_at=timezone.now()
    )
    assert recover_stale(now=timezone.now() + datetime.timedelta(seconds=1)) == 1
    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert outcomes == [("message_failed", "acme", row.pk)]


def test_recovery_requeues_queued_rows_whose_task_was_lost(
    tenants: Any, django_capture_on_commit_callbacks: Any
) -> None:
    row = _queue()
    DBTaskResult.objects.all().delete()
    past = timezone.now() - datetime.timedelta(seconds=10)
    OutboxMessage.objects.filter(pk=row.pk).update(next_attempt_at=past, enqueued_at=past)
    assert recover_stale() == 0  # merely waiting behind a backlog, for less than 30 s
    past = timezone.now() - datetime.timedelta(seconds=31)
    OutboxMessage.objects.filter(pk=row.pk).update(next_attempt_at=past, enqueued_at=past)
    with django_capture_on_commit_callbacks(execute=True):
        assert recover_stale() == 1
    assert deliveries().count() == 1


def test_workers_recover_on_their_own_at_most_every_interval(tenants: Any, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "QUEUE": {"RECOVER_EVERY_SECONDS": 3600}}
    from tenantmail.queue import recovery

    recovery._last_run = -float("inf")
    stale = _queue()
    OutboxMessage.objects.filter(pk=stale.pk).update(
        status=Status.SENDING, lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    other = _queue()
    assert deliver(other.pk) == "sent"  # the worker recovered `stale` first
    stale.refresh_from_db()
    assert stale.status == Status.QUEUED
    assert maybe_recover() == 0  # not again within the interval


def test_recover_command(tenants: Any) -> None:
    row = _queue()
    OutboxMessage.objects.filter(pk=row.pk).update(
        status=Status.SENDING, lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    out = StringIO()
    call_command("tenantmail_recover", stdout=out)
    assert "Recovered 1 outbox message(s)." in out.getvalue()
    call_command("tenantmail_recover", stdout=out)
    assert "Recovered 0 outbox message(s)." in out.getvalue()


def test_prune_command_deletes_only_old_finished_rows(tenants: Any) -> None:
    old = timezone.now() - datetime.timedelta(days=31)
    sent, failed, queued, recent = (_queue(subject=s) for s in ("s", "f", "q", "r"))
    OutboxMessage.objects.filter(pk=sent.pk).update(status=Status.SENT, created_at=old)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=Status.FAILED, created_at=old)
    OutboxMessage.objects.filter(pk=queued.pk).update(created_at=old)
    OutboxMessage.objects.filter(pk=recent.pk).update(status=Status.SENT)
    out = StringIO()
    call_command("tenantmail_prune_outbox", "--dry-run", stdout=out)
    assert "Would delete 2" in out.getvalue()
    call_command("tenantmail_prune_outbox", stdout=out)
    assert sorted(OutboxMessage.objects.values_list("subject", flat=True)) == ["q", "r"]
    call_command("tenantmail_prune_outbox", "--days", "0", stdout=out)
    assert list(OutboxMessage.objects.values_list("subject", flat=True)) == ["q"]


def test_a_claim_schedules_one_watchdog_per_half_lease(tenants: Any) -> None:
    from django_tasks_db.models import DBTaskResult

    watchdogs = DBTaskResult.objects.filter(task_path="tenantmail.queue.tasks.recover_outbox")
    first, second, third = _queue(), _queue(), _queue()
    claimed = claim(first.pk)
    assert deliver(first.pk) == "skipped"
    assert claimed is not None
    assert deliver(second.pk) == "sent"
    assert deliver(third.pk) == "sent"  # within half a lease: covered by the same watchdog
    (watchdog,) = watchdogs
    # LEASE_SECONDS=2 in FAST_QUEUE: after the lease, plus half a lease.
    assert watchdog.run_after > claimed.lease_expires_at


def test_a_payload_that_cannot_be_rebuilt_fails_at_once(tenants: Any) -> None:
    row = _queue()
    payload = {**row.payload, "class": "no.such.Message"}
    OutboxMessage.objects.filter(pk=row.pk).update(payload=payload)
    assert deliver(row.pk) == "failed"
    row.refresh_from_db()
    assert "UnstorableMessageError: the stored message cannot be rebuilt" in row.last_error


def test_a_task_a_dead_db_worker_left_running_is_recovered_and_closed(
    tenants: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from tenantmail.queue.tasks import enqueue_task

    row = _queue()
    enqueue_task(row.pk)  # a one-row task, as versions before the drain enqueued
    legacy = DBTaskResult.objects.filter(task_path="tenantmail.queue.tasks.deliver_outbox")
    # A db_worker took the task (RUNNING) and died before claiming the row.
    started = timezone.now() - datetime.timedelta(seconds=1)
    legacy.update(status="RUNNING", started_at=started)
    (orphan,) = legacy
    assert recover_stale() == 0  # still within the lease (2 s): maybe just slow
    later = timezone.now() + datetime.timedelta(seconds=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert recover_stale(now=later) == 1
    orphan.refresh_from_db()
    assert orphan.status == "FAILED"
    assert orphan.exception_class_path == "tenantmail.queue.recovery.WorkerLost"
    assert deliveries().get().args_kwargs["args"] == [0]  # recovery kicked a drain
    assert deliver(row.pk) == "sent"
