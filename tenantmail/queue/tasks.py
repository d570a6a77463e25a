"""The tasks: drain the outbox (batches of due rows), recover it, and deliver one row by id.

``drain_outbox`` is what enqueueing schedules (at most ``CONCURRENCY`` pending, see
:mod:`.slots`); ``deliver_outbox`` (one row) stays for tasks enqueued by earlier versions.
Task arguments are JSON and never hold more than ids; the rows hold the rest.

On Django 6.0+ this is a ``django.tasks`` task; on 5.2 one of the ``django-tasks`` backport.
django-tasks-db follows the same rule (it uses ``django.tasks`` whenever it exists), so the
task and the worker agree on which ``TASKS`` setting and ``Task`` class are in play.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import TenantMailConfigurationError

try:
    from django.tasks import task, task_backends
except ImportError:  # pragma: no cover - Django 5.2, exercised by the matrix
    try:
        from django_tasks import (  # type: ignore[no-redef,assignment,unused-ignore]
            task,
            task_backends,
        )
    except ImportError as error:
        raise TenantMailConfigurationError(
            "queued sending needs Django 6.0+ or the django-tasks backport: "
            'pip install "tenantmail[queue]" and add "django_tasks" to INSTALLED_APPS',
            setting="EMAIL_BACKEND / MAILERS (tenantmail.queue)",
        ) from error

__all__ = ["deliver_outbox", "drain_outbox", "recover_outbox", "task_backends"]


@task
def deliver_outbox(outbox_id: int) -> str:
    """Claim and send the outbox row ``outbox_id``; the outcome is on the row, not raised."""
    from .worker import deliver

    return deliver(outbox_id)


@task
def drain_outbox(slot: int | None = None) -> int:
    """Send every due outbox row, in batches, until none is left; returns how many were handled.

    ``slot``: the drain slot this task was enqueued for (freed first), ``None`` for a delayed or
    recovery drain (see :mod:`.slots`).
    """
    from .batch import drain

    return drain(slot)


@task
def recover_outbox() -> int:
    """The watchdog: re-enqueue rows whose worker died (see :func:`.recovery.watch`)."""
    from .recovery import recover_stale

    return recover_stale()


def enqueue_task(outbox_id: int, *, priority: int = 0, run_after: Any = None) -> None:
    """Enqueue :func:`deliver_outbox` on the configured backend and queue."""
    _enqueue(deliver_outbox, (outbox_id,), priority=priority, run_after=run_after)


def enqueue_drain(*, slot: int | None = None, run_after: Any = None) -> None:
    """Enqueue :func:`drain_outbox` (for ``slot``, or slotless; at once or at ``run_after``)."""
    _enqueue(drain_outbox, (slot,), run_after=run_after)


def enqueue_watchdog(run_after: Any) -> None:
    _enqueue(recover_outbox, (), run_after=run_after)


def _enqueue(
    task_: Any, args: tuple[Any, ...], *, priority: int = 0, run_after: Any = None
) -> None:
    from .conf import get_queue_settings

    qs = get_queue_settings()
    backend = task_backends[qs.task_backend]
    # One using() call: each one copies and re-validates the task.
    options: dict[str, Any] = {"backend": qs.task_backend, "queue_name": qs.queue_name}
    if priority and backend.supports_priority:
        options["priority"] = priority
    if run_after is not None and backend.supports_defer:
        options["run_after"] = run_after
    task_.using(**options).enqueue(*args)
