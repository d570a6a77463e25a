"""System checks for queued sending (run only when the queue is configured). Stable IDs:

- ``tenantmail.Q001`` ``TENANTMAIL["QUEUE"]`` is malformed
- ``tenantmail.Q002`` ``TASK_BACKEND`` names no ``TASKS`` backend (or the task framework is missing)
- ``tenantmail.Q003`` the task backend cannot run tasks later (``supports_defer``): retries and
  rate-limited messages then wait for recovery (``REQUEUE_AFTER_SECONDS``)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core import checks

from ..exceptions import TenantMailConfigurationError
from .conf import load_queue_settings

QUEUED_BACKEND = "tenantmail.queue.QueuedBackend"


def queue_configured() -> bool:
    """Whether this project uses the queue: a QueuedBackend mailer or a QUEUE setting."""
    raw = getattr(settings, "TENANTMAIL", {})
    if isinstance(raw, Mapping) and "QUEUE" in raw:
        return True
    if getattr(settings, "EMAIL_BACKEND", "") == QUEUED_BACKEND:
        return True
    mailers = getattr(settings, "MAILERS", {})
    return isinstance(mailers, Mapping) and any(
        isinstance(m, Mapping) and m.get("BACKEND") == QUEUED_BACKEND for m in mailers.values()
    )


@checks.register("tenantmail")
def check_queue(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not queue_configured():
        return []
    try:
        qs = load_queue_settings()
    except TenantMailConfigurationError as error:
        return [checks.Error(str(error), id="tenantmail.Q001")]
    try:
        from .tasks import task_backends

        backend = task_backends[qs.task_backend]
    except Exception as error:  # an unknown alias, a backend that fails to load, no framework
        return [
            checks.Error(
                f'TENANTMAIL["QUEUE"]["TASK_BACKEND"] = {qs.task_backend!r} is unusable: {error}',
                hint="Name an alias of the TASKS setting (and install the task framework).",
                id="tenantmail.Q002",
            )
        ]
    if not backend.supports_defer:
        return [
            checks.Warning(
                f"the task backend {qs.task_backend!r} ({type(backend).__name__}) cannot run "
                "tasks later, so retries and rate-limited messages wait for recovery "
                '(TENANTMAIL["QUEUE"]["REQUEUE_AFTER_SECONDS"])',
                hint="Use a backend with supports_defer, such as django_tasks_db.",
                id="tenantmail.Q003",
            )
        ]
    return []
