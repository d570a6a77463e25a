"""Signals for every outcome of a queued message.

All are sent with ``sender=OutboxMessage`` and keyword arguments ``outbox`` (the row), ``tenant``
(schema name, or ``None`` for platform mail). ``message_retrying`` and ``message_failed`` add
``error`` (the exception); ``message_retrying`` adds ``retry_at`` (a datetime).
"""

from __future__ import annotations

from django.dispatch import Signal

message_queued = Signal()
message_sent = Signal()
message_retrying = Signal()
message_failed = Signal()
