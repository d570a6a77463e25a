"""The outbox admin, the queue settings and failure classification."""

from __future__ import annotations

import datetime
import email.utils
import smtplib
from typing import Any

import django
import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailRequestsAPIError, AnymailUnsupportedFeature
from django.contrib.admin import AdminSite
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.test import RequestFactory

from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.models import OutboxMessage
from tenantmail.queue import enqueue
from tenantmail.queue.admin import OutboxMessageAdmin
from tenantmail.queue.conf import QueueSettings, load_queue_settings
from tenantmail.queue.retry import Verdict, backoff, classify
from tests.queue.conftest import deliveries


def test_admin_lists_outcomes_hides_the_message_and_retries_failed_rows(
    tenants: Any, django_capture_on_commit_callbacks: Any
) -> None:
    model_admin = OutboxMessageAdmin(OutboxMessage, AdminSite())
    failed = enqueue(EmailMessage("s", "b", to=["t@example.com"]), tenant="acme")
    platform = enqueue(EmailMessage("p", "b", to=["t@example.com"]), tenant="public")
    OutboxMessage.objects.filter(pk=failed.pk).update(status="failed", attempts=5)
    assert model_admin.tenant_label(failed) == "acme"
    assert model_admin.tenant_label(platform) == "(platform)"
    assert "payload" not in model_admin.get_fields(RequestFactory().get("/"))
    assert not model_admin.has_add_permission(RequestFactory().get("/"))
    with django_capture_on_commit_callbacks(execute=True):
        model_admin.retry_now(RequestFactory().post("/"), OutboxMessage.objects.all())
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("queued", 0)
    assert deliveries().count() == 1  # the failed row was queued again, and a drain kicked
    assert str(failed).startswith(f"#{failed.pk} acme queued")


def test_queue_settings_defaults(settings: Any) -> None:
    settings.TENANTMAIL = {}
    assert load_queue_settings() == QueueSettings()


@pytest.mark.parametrize(
    ("queue", "match"),
    [
        ("nope", r'TENANTMAIL\["QUEUE"\]: must be a dict'),
        ({"LEASE": 1}, "unknown keys"),
        ({"MAX_ATTEMPTS": 0}, r'\["MAX_ATTEMPTS"\]: must be a finite number >= 1'),
        ({"LEASE_SECONDS": float("inf")}, r'\["LEASE_SECONDS"\]'),
        ({"BACKOFF_SECONDS": 10, "BACKOFF_MAX_SECONDS": 5}, "must be >= BACKOFF_SECONDS"),
        ({"RATE_LIMIT": 0}, r'\["RATE_LIMIT"\]: must be a positive number'),
        ({"RATE_LIMIT": True}, r'\["RATE_LIMIT"\]'),
        ({"TENANT_RATE_LIMITS": []}, r'\["TENANT_RATE_LIMITS"\]: must be a dict'),
        ({"TENANT_RATE_LIMITS": {"a": -1}}, r'\["TENANT_RATE_LIMITS"\]'),
        ({"RATE_LIMIT_STORAGE": "redis"}, "storage URI"),
        ({"TASK_BACKEND": ""}, r'\["TASK_BACKEND"\]: must be a non-empty string'),
    ],
)
def test_bad_queue_settings_name_the_setting(settings: Any, queue: Any, match: str) -> None:
    settings.TENANTMAIL = {"QUEUE": queue}
    with pytest.raises(TenantMailConfigurationError, match=match):
        load_queue_settings()


def _response(status: int, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    response._content = b"{}"
    return response


def _api_error(status: int, **headers: str) -> AnymailRequestsAPIError:
    return AnymailRequestsAPIError("failed", response=_response(status, **headers))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_api_error(429), True),
        (_api_error(500), True),
        (_api_error(503), True),
        (_api_error(408), True),
        (_api_error(400), False),
        (_api_error(401), False),
        (_api_error(422), False),
        (smtplib.SMTPResponseException(451, b"try later"), True),
        (smtplib.SMTPResponseException(550, b"no such user"), False),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"busy")}), True),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"busy"), "b@x": (550, b"no")}), False),
        (smtplib.SMTPServerDisconnected("gone"), True),
        (TimeoutError("slow"), True),
        (ConnectionResetError("reset"), True),
        (ImproperlyConfigured("bad config"), False),
        (TenantMailConfigurationError("deleted", tenant="x"), False),
        (AnymailUnsupportedFeature("no"), False),
        (RuntimeError("unknown: retried, bounded by MAX_ATTEMPTS"), True),
    ],
)
def test_classify(exc: BaseException, transient: bool) -> None:
    assert classify(exc).transient is transient


def test_a_wrapped_connection_error_is_transient() -> None:
    exc = AnymailAPIError("while sending")
    exc.__cause__ = requests.ConnectionError("refused")
    assert classify(exc).transient


def test_retry_after_seconds_and_dates_are_honoured() -> None:
    assert classify(_api_error(429, **{"Retry-After": "120"})).retry_after == 120
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=300)
    verdict = classify(_api_error(503, **{"Retry-After": email.utils.format_datetime(when)}))
    assert verdict.retry_after is not None
    assert 290 < verdict.retry_after <= 300
    assert classify(_api_error(429, **{"Retry-After": "soon"})).retry_after is None
    assert classify(_api_error(429, **{"Retry-After": "99999999"})).retry_after == 86_400


def test_backoff_is_exponential_jittered_capped_and_respects_retry_after() -> None:
    qs = QueueSettings(backoff_seconds=10, backoff_max_seconds=60)
    plain = Verdict(transient=True)
    for attempts, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = [backoff(attempts, qs, plain) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff(1, qs, Verdict(transient=True, retry_after=500)) == 500


def _queue_checks() -> list[str]:
    from tenantmail.queue.checks import check_queue

    return [m.id for m in check_queue()]


def test_queue_checks_are_silent_when_the_queue_is_not_used(settings: Any) -> None:
    settings.TENANTMAIL = {"DEFAULT": {"BACKEND": "smtp"}}
    settings.TASKS = {"default": {"BACKEND": "nope.Nope"}}
    assert _queue_checks() == []


def test_queue_check_ids(settings: Any) -> None:
    immediate = (
        "django.tasks.backends.immediate.ImmediateBackend"
        if django.VERSION >= (6, 0)
        else "django_tasks.backends.immediate.ImmediateBackend"
    )
    settings.TENANTMAIL = {"QUEUE": {}}
    assert _queue_checks() == []
    settings.TENANTMAIL = {"QUEUE": {"MAX_ATTEMPTS": "many"}}
    assert _queue_checks() == ["tenantmail.Q001"]
    settings.TENANTMAIL = {"QUEUE": {"TASK_BACKEND": "missing"}}
    assert _queue_checks() == ["tenantmail.Q002"]
    settings.TENANTMAIL = {}
    if hasattr(settings, "MAILERS"):
        settings.MAILERS = {"default": {"BACKEND": "tenantmail.queue.QueuedBackend"}}
    else:
        settings.EMAIL_BACKEND = "tenantmail.queue.QueuedBackend"
    settings.TASKS = {"default": {"BACKEND": immediate}}
    assert _queue_checks() == ["tenantmail.Q003"]
