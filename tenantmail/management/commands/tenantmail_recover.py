"""Re-enqueue outbox messages whose worker died (send lease expired) or whose task was lost.

Idempotent and safe to run every minute from cron, alongside the workers (which also recover
stale rows on their own every ``TENANTMAIL["QUEUE"]["RECOVER_EVERY_SECONDS"]``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tenantmail.queue.recovery import recover_stale


class Command(BaseCommand):
    help = "Re-enqueue queued mail whose worker died (lease expired) or whose task was lost."

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        while True:
            handled = recover_stale()
            total += handled
            if handled == 0:
                break
        self.stdout.write(f"Recovered {total} outbox message(s).")
