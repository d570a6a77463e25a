"""Webhook request cost: tenantmail's tenant-aware Mailgun view vs Anymail's own, same payloads.

    python -m benchmarks.webhooks [--requests N] [--rounds R]

Not yet a row of ``make bench`` (``benchmarks.run``); a standalone report. Both views get the same
pre-signed "delivered" events (signing is outside the timing) through ``RequestFactory``, with
no receivers connected; tenantmail's adds the tenant lookup (cached), the per-request secret, the
Mailgun token check (Django's local-memory cache), attribution and dispatch in the tenant's
schema. Targets (issue 10): <= 1.2x Anymail's time per request; 0 database queries per event
beyond the cached tenant lookup (delivered events write nothing: no outbox, no suppression).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhooks")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext
    from django_tenants.utils import get_tenant_model

    from benchmarks import fixtures
    from tenantmail.tenancy import tenant_cache
    from tenantmail.webhooks.esps import MailgunTrackingView
    from tenantmail.webhooks.testing import mailgun_post

    fixtures.migrate()
    key = "bench-webhook-signing-key-5e0c"
    model = get_tenant_model()
    tenant = model._default_manager.filter(mail_backend__gt="").exclude(schema_name="public")
    tenant = tenant.order_by("pk").first() or _make_tenant(model)
    tenant.mail_webhook_secrets = {"mailgun": {"webhook_signing_key": key}}
    tenant.save()
    schema = tenant.schema_name
    factory = RequestFactory()

    def requests(n: int) -> list[Any]:
        out = []
        for _ in range(n):
            body, content_type, _headers = mailgun_post(key, metadata={"tenant": schema})
            out.append(factory.post("/hook/", data=body, content_type=content_type))
        return out

    anymail_view = MailgunTrackingWebhookView.as_view(webhook_signing_key=key)
    ours = MailgunTrackingView.as_view()

    def run_anymail(batch: list[Any]) -> None:
        for request in batch:
            assert anymail_view(request).status_code == 200

    def run_ours(batch: list[Any]) -> None:
        for request in batch:
            assert ours(request, tenant_key=schema).status_code == 200

    run_ours(requests(50))  # warm: tenant cache, imports
    run_anymail(requests(50))
    times: dict[str, list[float]] = {"anymail": [], "tenantmail": []}
    for _ in range(args.rounds):
        for name, runner in (("anymail", run_anymail), ("tenantmail", run_ours)):
            batch = requests(args.requests)
            start = time.perf_counter()
            runner(batch)
            times[name].append((time.perf_counter() - start) / args.requests)
    tenant_cache.invalidate()
    with CaptureQueriesContext(connection) as cold:
        run_ours(requests(1))
    with CaptureQueriesContext(connection) as warm:
        run_ours(requests(100))
    anymail_us = statistics.median(times["anymail"]) * 1e6
    ours_us = statistics.median(times["tenantmail"]) * 1e6
    ratio = ours_us / anymail_us
    print(f"Anymail's MailgunTrackingWebhookView: {anymail_us:8.1f} µs per request (median)")
    print(f"tenantmail MailgunTrackingView:       {ours_us:8.1f} µs per request (median)")
    print(f"ratio {ratio:.2f}x (target <= 1.2x): {'PASS' if ratio <= 1.2 else 'FAIL'}")
    print(
        f"queries: first request {len(cold.captured_queries)} (tenant lookup), "
        f"next 100 requests {len(warm.captured_queries)} (target 0): "
        f"{'PASS' if len(warm.captured_queries) == 0 else 'FAIL'}"
    )
    return 0


def _make_tenant(model: Any) -> Any:
    tenant = model(schema_name="webhookbench", name="Webhook bench", mail_backend="mailgun")
    tenant.mail_options = {"api_key": "key-webhook-bench-0000"}
    tenant.save()
    return tenant


if __name__ == "__main__":
    sys.exit(main())
