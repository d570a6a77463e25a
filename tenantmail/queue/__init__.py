"""Queued sending: the tenant survives the queue, nothing is lost, credentials never travel.

Owns ``QueuedBackend`` and ``enqueue()`` (store the message in ``OutboxMessage`` and, on commit,
make sure a ``django.tasks`` drain task will run: :mod:`.slots`), the drain (batch claims with
``FOR UPDATE SKIP LOCKED`` and a lease, sends on a few threads, bulk outcomes: :mod:`.batch`),
retries with backoff, recovery of rows a dead worker left behind, fairness between tenants and
per-tenant rate limits.

Built on the core: ``tenancy.current_tenant`` / ``sending_as`` (the tenant is captured at enqueue
and re-entered in the worker), ``TenantBackend`` (the worker sends through it, so credentials are
resolved at send time by ``config.resolve``), ``masking`` (errors stored on the row) and
``OutboxMessage`` in ``tenantmail.models``. The queue engine is ``django.tasks`` (Django 6.0+) or
the ``django-tasks`` backport (5.2); any backend works, ``django-tasks-db`` is the tested one.
Settings: ``TENANTMAIL["QUEUE"]`` (:mod:`tenantmail.queue.conf`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import SecretOverrideError, UnstorableMessageError

if TYPE_CHECKING:
    from .backend import QueuedBackend
    from .enqueueing import enqueue

__all__ = ["QueuedBackend", "SecretOverrideError", "UnstorableMessageError", "enqueue"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (its system checks do, at startup) must not import the task
    # framework or the models; only using the queue does.
    if name == "QueuedBackend":
        from .backend import QueuedBackend

        return QueuedBackend
    if name == "enqueue":
        from .enqueueing import enqueue

        return enqueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
