"""`make bench`: every row side by side in one run, medians of several rounds, one table.

    python -m benchmarks.run                 # the full run (see BENCHMARKS.md)
    python -m benchmarks.run --quick         # fewer/smaller rounds, for working on the suite
    python -m benchmarks.run --profile 6     # pyinstrument profile of one row instead
    python -m benchmarks.run --only queue    # just the queue section (vs django-post_office)

A report, not a test: it prints PASS/FAIL per target and exits 0 either way (2 if a row could
not run at all).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

ROWS_FOR_PROFILE = ("1", "2", "3", "3s", "4", "5", "6a", "6b")


@dataclass(frozen=True)
class Scale:
    rounds: int = 21  #: rounds of rows 1-3 and 6 (median taken)
    network_sends: int = 150  #: per round, rows 1 and 3
    naive_sends: int = 45  #: per round, row 2
    inproc_sends: int = 2500  #: per round, row 6
    many_tenants: int = 1_000
    many_rounds: int = 5  #: rows 4 and the threaded run: rounds of `many_tenants` sends
    schema_rounds: int = 3  #: row 4s
    churn_tenants: int = 10_000
    churn_round: int = 1_000  #: row 5 runs one full cycle, in rounds of this many sends
    churn_max_connections: int = 256
    threads: int = 8
    cache_sample: int = 2_000  #: schema lookups to measure the tenant cache's memory per tenant
    webhook_rounds: int = 21  #: webhook pairs W1, W2 (benchmarks.webhooks)
    webhook_requests: int = 1_000  #: per round and view


QUICK = Scale(
    rounds=3,
    network_sends=100,
    naive_sends=30,
    inproc_sends=1000,
    many_tenants=200,
    many_rounds=2,
    schema_rounds=2,
    churn_tenants=1000,
    churn_round=250,
    churn_max_connections=64,
    cache_sample=200,
    webhook_rounds=3,
    webhook_requests=300,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small run, to check the suite")
    parser.add_argument(
        "--profile",
        choices=ROWS_FOR_PROFILE,
        help="profile this row with pyinstrument instead of printing the table",
    )
    parser.add_argument("--output", help="also write the report to this file")
    parser.add_argument(
        "--only",
        choices=("queue",),
        help="run just this section (queue: tenantmail's queue against django-post_office)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else Scale()
    started = time.monotonic()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

    from .procs import EspProcess, Monitor, raise_fd_limit

    raise_fd_limit()
    esp = EspProcess()
    monitor = Monitor()
    try:
        # Anymail's requests sessions must trust the fake ESP's throwaway CA.
        os.environ["REQUESTS_CA_BUNDLE"] = esp.ca_bundle_path
        import django

        django.setup()
        lines = [] if args.only else run(args, scale, esp, monitor, started)
        if not args.profile:  # the queue section, appended (benchmarks/queue_bench.py)
            from .queue_bench import queue_section

            lines += queue_section(esp, quick=args.quick, header=bool(args.only))
    finally:
        esp.stop()
        monitor.stop()
    text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "w") as out:
            out.write(text + "\n")
    return 0


def run(
    args: argparse.Namespace, scale: Scale, esp: Any, monitor: Any, started: float
) -> list[str]:
    from tenantmail import pool as tm_pool
    from tenantmail import signals
    from tenantmail.backends import TenantBackend
    from tenantmail.conf import get_settings
    from tenantmail.tenancy import tenant_cache

    from . import fixtures, report
    from .common import schema
    from .rows import (
        Bench,
        InProcRawRow,
        InProcTenantRow,
        NaiveRow,
        RawRow,
        RowStats,
        TenantRow,
        ThreadedRow,
        interleave,
        lookups_during,
        tenant_cache_footprint,
        tenantmail_settings,
    )

    header = report.machine()
    listening = [
        name
        for name, signal in (("pre_send", signals.pre_send), ("post_send", signals.post_send))
        if signal.has_listeners(TenantBackend)
    ]
    header.append(
        "tenantmail signal receivers connected: "
        + (", ".join(listening) + " (their cost is included)" if listening else "none")
    )
    setup_started = time.monotonic()
    fixtures.migrate()
    created = fixtures.ensure_tenants(scale.churn_tenants, esp.mailgun_api_url)
    tenants = fixtures.load_tenants(scale.churn_tenants)
    inproc = fixtures.load_inproc_tenant()
    tm_pool.clear()
    tenant_cache.invalidate()
    # 10,000 tenant instances stay alive all run: keep the collector from re-scanning them in
    # every row's time (an app does not hold them all; the benchmark needs them loaded).
    gc.collect()
    gc.freeze()
    setup_seconds = time.monotonic() - setup_started
    bench = Bench(esp, monitor)
    many = tenants[: scale.many_tenants]

    if args.profile:
        from .profiling import profile

        return profile(args.profile, scale, esp, tenants, inproc)

    # -- rows 1, 2, 3, 3s: interleaved round by round ---------------------------------------
    raw = RowStats("1", "raw Anymail Mailgun backend, one connection held open")
    naive = RowStats("2", "naive: per send, DB read + get_connection(), new session")
    warm = RowStats("3", "TenantBackend, warm pool, 1 tenant (request context)")
    warm_schema = RowStats("3s", "TenantBackend, warm pool, 1 tenant, under schema_context")
    raw_row = RawRow(esp.mailgun_api_url)
    naive_row = NaiveRow(schema(0))
    warm_row = TenantRow(tenants[:1])
    warm_schema_row = TenantRow(tenants[:1], mode="schema")
    for stats, row in ((raw, raw_row), (naive, naive_row), (warm, warm_row)):
        bench.warm_up(stats, row, 10)
    phase_a = [
        (raw, raw_row, scale.network_sends),
        (naive, naive_row, scale.naive_sends),
        (warm, warm_row, scale.network_sends),
        (warm_schema, warm_schema_row, scale.network_sends),
    ]
    lookups_during(warm_schema, lambda: interleave(bench, phase_a, scale.rounds))
    raw_row.close()

    # -- row 6: in-process, raw test backend vs TenantBackend, interleaved -------------------
    inproc_raw = RowStats("6a", "in-process: raw Anymail test backend", network=False)
    inproc_tenant = RowStats(
        "6b", "in-process: TenantBackend → Anymail test backend", network=False
    )
    inproc_raw_row, inproc_tenant_row = InProcRawRow(), InProcTenantRow(inproc)
    bench.warm_up(inproc_raw, inproc_raw_row, 500)
    bench.warm_up(inproc_tenant, inproc_tenant_row, 500)
    interleave(
        bench,
        [
            (inproc_raw, inproc_raw_row, scale.inproc_sends),
            (inproc_tenant, inproc_tenant_row, scale.inproc_sends),
        ],
        scale.rounds,
    )
    # Paired per round (both ran back to back), then the median of the differences.
    overhead_us = 1e6 * statistics.median(
        [
            t / tn - r / rn
            for t, tn, r, rn in zip(
                inproc_tenant.round_seconds,
                inproc_tenant.round_sends,
                inproc_raw.round_seconds,
                inproc_raw.round_sends,
                strict=True,
            )
        ]
    )

    # -- row 4 (+4s): 1,000 tenants round-robin, every connection kept ------------------------
    n_many = len(many)
    many_stats = RowStats(
        "4", f"TenantBackend, {n_many:,} tenants round-robin, MAX_CONNECTIONS={n_many + 24:,}"
    )
    many_schema = RowStats("4s", f"same, {n_many:,} tenants under schema_context")
    many_stats.tenants = many_schema.tenants = n_many
    with tenantmail_settings(MAX_CONNECTIONS=n_many + 24):
        _fresh_pool(esp)
        many_row = TenantRow(many)
        bench.warm_up(many_stats, many_row, n_many)  # opens one connection per tenant
        for _ in range(scale.many_rounds):
            bench.round(many_stats, many_row, n_many)
        bench.finish_sockets(many_stats)
        many_schema_row = TenantRow(many, mode="schema")
        tenant_cache.invalidate()

        def schema_rounds() -> None:
            bench.warm_up(many_schema, many_schema_row, n_many)  # cold tenant cache
            for _ in range(scale.schema_rounds):
                bench.round(many_schema, many_schema_row, n_many)

        lookups_during(many_schema, schema_rounds)

    # -- row 5: 10,000 tenants round-robin through 256 connections (churn) ----------------
    n_churn = len(tenants)
    churn = RowStats(
        "5",
        f"TenantBackend, {n_churn:,} tenants round-robin, "
        f"MAX_CONNECTIONS={scale.churn_max_connections} (churn)",
    )
    churn.tenants = n_churn
    with tenantmail_settings(MAX_CONNECTIONS=scale.churn_max_connections):
        _fresh_pool(esp)
        churn_row = TenantRow(tenants)
        churn_row.sample_sockets = True
        bench.warm_up(churn, churn_row, scale.churn_max_connections)
        for _ in range(n_churn // scale.churn_round):  # one full cycle over every tenant
            bench.round(churn, churn_row, scale.churn_round)
        bench.finish_sockets(churn)

    # Request-context sends keep nothing per tenant; schema_context sends keep the looked-up
    # instance for TENANT_CACHE_SECONDS, up to TenantCache.MAX_ENTRIES of them. Measured on a
    # sample (each lookup is a query), reported per tenant.
    cache_sample = min(scale.cache_sample, n_churn)
    cache_bytes = tenant_cache_footprint([t.schema_name for t in tenants[:cache_sample]])
    cache_per_tenant = cache_bytes / cache_sample

    # -- threaded: 8 threads, 1,000 tenants --------------------------------------------------
    threaded = RowStats("T", f"TenantBackend, {scale.threads} threads, {n_many:,} tenants")
    threaded.tenants = n_many
    with tenantmail_settings(MAX_CONNECTIONS=n_many + 24):
        _fresh_pool(esp)
        bench.warm_up(threaded, TenantRow(many), n_many)
        threaded_row = ThreadedRow(many, threads=scale.threads)
        for _ in range(scale.many_rounds):
            bench.round(threaded, threaded_row, n_many)
        bench.finish_sockets(threaded)
    tm_pool.clear()

    # -- webhooks: tenantmail's Mailgun view vs Anymail's, same payloads (issue 10) ----------
    from . import webhooks

    hooks = webhooks.measure(scale.webhook_rounds, scale.webhook_requests)

    all_rows = [
        raw,
        naive,
        warm,
        warm_schema,
        many_stats,
        many_schema,
        churn,
        inproc_raw,
        inproc_tenant,
        threaded,
    ]
    results = report.targets(
        raw=raw,
        naive=naive,
        warm=warm,
        warm_schema=warm_schema,
        many=many_stats,
        many_schema=many_schema,
        churn=churn,
        inproc_raw=inproc_raw,
        inproc_tenant=inproc_tenant,
        threaded=threaded,
        overhead_us=overhead_us,
        ttl=get_settings().tenant_cache_seconds,
        churn_max_connections=scale.churn_max_connections,
        all_rows=all_rows,
    )
    results += hooks.targets()
    total = time.monotonic() - started
    passed = sum(t.passed for t in results)
    return [
        "tenantmail benchmarks"
        + (" (--quick: reduced sizes, not comparable)" if args.quick else ""),
        *header,
        f"fake ESP: FakeESP(tls=True) in its own process, {esp.mailgun_api_url}",
        f"setup: {setup_seconds:.1f} s ({created['created']:,} tenant rows created, "
        f"{created['updated']:,} repointed at this run's fake ESP)",
        f"rounds: median of {scale.rounds} (rows 1-3, 6), {scale.many_rounds} (4, T), "
        f"{scale.schema_rounds} (4s), {n_churn // scale.churn_round} (5: one full cycle)",
        "",
        *report.rows_table(all_rows, raw),
        "",
        "untimed warm-up sends opened "
        + ", ".join(
            f"{s.warmup_conns:,} TCP conns for row {s.key}" for s in all_rows if s.warmup_conns
        )
        + " (not in the table)",
        f"TenantBackend overhead per message, in-process (6b - 6a, median of paired rounds): "
        f"{overhead_us:.1f} µs",
        f"tenant cache (schema_context lookups): {cache_per_tenant / 1024:.2f} KiB of Python "
        f"objects per tenant (tracemalloc, {cache_sample:,} lookups), so "
        f"{cache_per_tenant * n_churn / report.MB:.1f} MB at {n_churn:,} tenants",
        f"threaded run: {threaded.rate:,.0f} msgs/s with {scale.threads} threads; "
        f"{len(threaded.wrong)} of {threaded.received:,} messages had another tenant's credential",
        "",
        *hooks.lines(),
        "",
        *report.targets_table(results),
        "",
        f"{passed} of {len(results)} targets PASS; total run time {total:.0f} s "
        f"(load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())})",
        *(f"  wrong: {w}" for s in all_rows for w in s.wrong[:3]),
    ]


def _fresh_pool(esp: Any) -> None:
    """Close every pooled connection and wait until the fake ESP has seen them go."""
    from tenantmail import pool as tm_pool

    tm_pool.clear()
    esp.wait_idle(0)
    esp.reset_max_open()


if __name__ == "__main__":
    sys.exit(main())
