"""``QueuedBackend``: a Django mail backend that queues instead of sending."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from ..tenancy import TenantLike
from .enqueueing import check_options, enqueue_many


class QueuedBackend(BaseEmailBackend):
    """Stores each message in the outbox and enqueues a task to send it through its tenant.

    Use as ``EMAIL_BACKEND`` (Django 5.2/6.0) or a ``MAILERS`` ``BACKEND`` (6.1). ``tenant=``
    pins the tenant; ``mailer=`` names the ``MAILERS`` alias the worker sends through (Django
    6.1; default: a plain ``TenantBackend``); other keywords are non-secret backend overrides
    (``requests_timeout=``...). A credential override is refused: it would have to be stored.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        tenant: TenantLike = None,
        mailer: str = "",
        alias: str | None = None,
        **options: Any,
    ) -> None:
        options.pop("_ignore_unknown_kwargs", None)
        super().__init__(alias=alias)
        self.alias = alias
        # Queueing errors are never silent: the message would be lost without a trace.
        self.fail_silently = fail_silently
        self.tenant = tenant
        self.mailer = mailer
        self.options = check_options(options, tenant=None)

    def __repr__(self) -> str:
        return (
            f"<QueuedBackend alias={self.alias!r} mailer={self.mailer!r} "
            f"options={sorted(self.options)!r}>"
        )

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Store and enqueue every message (all or none); returns how many were queued."""
        if not email_messages:
            return 0
        rows = enqueue_many(
            list(email_messages), tenant=self.tenant, mailer=self.mailer, options=self.options
        )
        return len(rows)
