"""Webhook request cost: tenantmail's tenant-aware Mailgun view vs Anymail's own, same payloads.

Part of ``make bench`` (``benchmarks.run`` calls :func:`measure`); also standalone:

    python -m benchmarks.webhooks [--requests N] [--rounds R]

Both views get the same kind of pre-signed Mailgun "delivered" event (signing and building the
request are outside the timing) through ``RequestFactory``, in rounds that alternate which view
goes first; the ratio is the median of the per-round ratios. tenantmail's view adds the tenant
lookup (cached), the tenant's secret, the Mailgun timestamp check and single-use signature
(Django's default cache: local memory here), attribution and, when a receiver listens, the
switch to the tenant's schema. Pairs:

- W1: no receiver connected, no queued message to update (nothing to write);
- W2: one no-op receiver on Anymail's ``tracking`` signal (both views send it), so tenantmail's
  view switches to the tenant's schema around it.

Queries: warm W1 requests must make none; an event for a queued message makes the outbox's
``UPDATE`` (the bookkeeping, counted separately). Targets (issue 10): ≤ 1.2 x Anymail's time per
request; 0 queries per event beyond the cached tenant lookup and the outbox/suppression writes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

SIGNING_KEY = "bench-webhook-signing-key-5e0c"
TARGET_RATIO = 1.2


@dataclass
class Pair:
    key: str
    label: str
    anymail: list[float] = field(default_factory=list)  #: seconds per request, per round
    tenantmail: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(t / a for t, a in zip(self.tenantmail, self.anymail, strict=True))

    def row(self) -> str:
        anymail_us = statistics.median(self.anymail) * 1e6
        ours_us = statistics.median(self.tenantmail) * 1e6
        return (
            f"{self.key}: {self.label}: Anymail {anymail_us:.1f} µs, tenantmail {ours_us:.1f} µs "
            f"per request (medians); {self.ratio:.2f} x (median of {len(self.anymail)} paired "
            "rounds)"
        )


@dataclass
class WebhookResult:
    schema: str
    requests: int
    pairs: list[Pair]
    cold_queries: int  #: the first request after the tenant cache was emptied
    warm_queries: int  #: over `warm_requests` W1 requests
    warm_requests: int
    bookkeeping_statements: list[str]  #: one event for a queued message (SQL, shortened)

    def lines(self) -> list[str]:
        return [
            f"webhooks (issue 10): Mailgun tracking, {self.requests:,} requests per round, tenant "
            f"{self.schema!r}, RequestFactory (no middleware), Django's local-memory cache",
            *(pair.row() for pair in self.pairs),
            f"webhook queries: first request after emptying the tenant cache {self.cold_queries} "
            f"(the tenant lookup); next {self.warm_requests} W1 requests {self.warm_queries}; "
            f"an event for a queued message: {len(self.bookkeeping_statements)} statement(s): "
            + "; ".join(self.bookkeeping_statements),
        ]

    def targets(self) -> list[Any]:
        from .report import Target

        out = [
            Target(
                f"webhook {pair.key}: tenantmail view ≤ {TARGET_RATIO} x Anymail's per request",
                f"{pair.ratio:.2f} x (median of {len(pair.anymail)} paired rounds)",
                pair.ratio <= TARGET_RATIO,
            )
            for pair in self.pairs
        ]
        updates = [s for s in self.bookkeeping_statements if s.startswith("UPDATE")]
        others = [
            s
            for s in self.bookkeeping_statements
            if not s.startswith(("UPDATE", "SET search_path"))
        ]
        out.append(
            Target(
                "webhook: 0 DB queries per warm event beyond the outbox/suppression writes",
                f"{self.warm_queries} in {self.warm_requests} warm requests; a queued message's "
                f"event: {len(updates)} outbox UPDATE, {len(others)} other",
                self.warm_queries == 0 and len(updates) == 1 and not others,
            )
        )
        return out


def measure(rounds: int, requests: int) -> WebhookResult:
    """Run the webhook pairs (Django must be set up, the benchmark database migrated)."""
    from anymail.signals import tracking
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from django.db import connection
    from django.test import RequestFactory

    from tenantmail.tenancy import tenant_cache
    from tenantmail.webhooks.esps import MailgunTrackingView
    from tenantmail.webhooks.testing import mailgun_post

    from .rows import capture_queries

    schema = _bench_tenant()
    factory = RequestFactory()

    def batch(n: int, message_id: str = "") -> list[Any]:
        out = []
        for _ in range(n):
            body, content_type, _headers = mailgun_post(
                SIGNING_KEY, metadata={"tenant": schema}, message_id=message_id
            )
            out.append(factory.post("/hook/", data=body, content_type=content_type))
        return out

    anymail_view = MailgunTrackingWebhookView.as_view(webhook_signing_key=SIGNING_KEY)
    ours = MailgunTrackingView.as_view()

    def run_anymail(requests_: list[Any]) -> None:
        for request in requests_:
            assert anymail_view(request).status_code == 200

    def run_ours(requests_: list[Any]) -> None:
        for request in requests_:
            assert ours(request, tenant_key=schema).status_code == 200

    def pair(key: str, label: str) -> Pair:
        result = Pair(key, label)
        run_ours(batch(100))  # warm: tenant cache, imports
        run_anymail(batch(100))
        runners: list[tuple[list[float], Callable[[list[Any]], None]]] = [
            (result.anymail, run_anymail),
            (result.tenantmail, run_ours),
        ]
        for round_ in range(rounds):
            for times, runner in runners if round_ % 2 == 0 else runners[::-1]:
                requests_ = batch(requests)
                start = time.process_time()
                runner(requests_)
                times.append((time.process_time() - start) / requests)
        return result

    w1 = pair("W1", "no receiver, nothing to write")
    with _receiver(tracking):
        w2 = pair("W2", "one no-op receiver (tenantmail switches schema around it)")

    tenant_cache.invalidate()
    with capture_queries(connection) as cold:
        run_ours(batch(1))
    warm_requests = 100
    with capture_queries(connection) as warm:
        run_ours(batch(warm_requests))
    with capture_queries(connection) as queued:
        run_ours(batch(1, message_id="bench-queued-1@mg.example.com"))
    return WebhookResult(
        schema=schema,
        requests=requests,
        pairs=[w1, w2],
        cold_queries=len(cold.captured_queries),
        warm_queries=len(warm.captured_queries),
        warm_requests=warm_requests,
        bookkeeping_statements=[q["sql"][:40] for q in queued.captured_queries],
    )


@contextmanager
def _receiver(signal: Any) -> Iterator[None]:
    def noop(**kwargs: Any) -> None:
        return None

    signal.connect(noop, dispatch_uid="benchmarks-webhooks-noop")
    try:
        yield
    finally:
        signal.disconnect(dispatch_uid="benchmarks-webhooks-noop")


def _bench_tenant() -> str:
    """A tenant with its own Mailgun account and webhook signing key (made if there is none)."""
    from django_tenants.utils import get_tenant_model

    model = get_tenant_model()
    tenant = (
        model._default_manager.filter(mail_backend="mailgun")
        .exclude(schema_name="public")
        .order_by("pk")
        .first()
    )
    if tenant is None:
        tenant = model(schema_name="webhookbench", name="Webhook bench", mail_backend="mailgun")
        tenant.mail_options = {"api_key": "key-webhook-bench-0000"}
    tenant.mail_webhook_secrets = {"mailgun": {"webhook_signing_key": SIGNING_KEY}}
    tenant.save()
    return str(tenant.schema_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhooks")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from . import fixtures
    from .report import targets_table

    fixtures.migrate()
    result = measure(args.rounds, args.requests)
    print("\n".join([*result.lines(), "", *targets_table(result.targets())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
