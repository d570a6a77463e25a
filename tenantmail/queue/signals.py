"""Signals for every outcome of a queued message.

All are sent with ``sender=OutboxMessage`` and keyword arguments ``outbox`` (the row), ``tenant``
(schema name, or ``None`` for platform mail). ``message_retrying`` and ``message_failed`` add
``error`` (the exception; ``None`` when recovery fails a message whose worker died on every
attempt); ``message_retrying`` adds ``retry_at`` (a datetime).
"""

from __future__ import annotations

from django.dispatch import Signal

message_queued = Signal()
message_sent = Signal()
message_retrying = Signal()
message_failed = Signal()
