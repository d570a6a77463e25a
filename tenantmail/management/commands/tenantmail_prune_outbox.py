"""Delete finished outbox rows (sent or failed) older than ``PRUNE_AFTER_DAYS`` (or --days)."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from tenantmail.models import OutboxMessage
from tenantmail.queue.conf import get_queue_settings


class Command(BaseCommand):
    help = "Delete sent and failed outbox messages older than N days (queued ones are kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help='Age in days (default: TENANTMAIL["QUEUE"]["PRUNE_AFTER_DAYS"], 30).',
        )
        parser.add_argument("--dry-run", action="store_true", help="Count; delete nothing.")

    def handle(self, *args: Any, days: int | None, dry_run: bool, **options: Any) -> None:
        if days is None:
            days = get_queue_settings().prune_after_days
        cutoff = timezone.now() - datetime.timedelta(days=days)
        old = OutboxMessage.objects.filter(
            status__in=[OutboxMessage.Status.SENT, OutboxMessage.Status.FAILED],
            created_at__lt=cutoff,
        )
        if dry_run:
            self.stdout.write(f"Would delete {old.count()} outbox message(s) older than {days}d.")
            return
        deleted, _ = old.delete()
        self.stdout.write(f"Deleted {deleted} outbox message(s) older than {days} day(s).")
