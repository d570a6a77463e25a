"""`make bench`: tenantmail's benchmark suite (a report, not a test; see BENCHMARKS.md)."""
