"""Benchmark settings: the example site's, on a database of their own.

``database_url("bench")`` runs first: without ``DATABASE_URL`` it starts an embedded PostgreSQL
under ``.pgdata/bench`` and exports its URL, so ``example_site.settings`` (imported next) reuses
that server instead of starting the demo's.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from example_site.embedded_pg import database_url, django_database

BENCH_DATABASE_URL = database_url("bench")

from example_site import settings as _site  # noqa: E402
from example_site.settings import *  # noqa: E402, F403
from tenantmail.conf import BACKEND_ALIASES  # noqa: E402

from .common import TEST_BACKEND  # noqa: E402

DATABASES = {"default": django_database(BENCH_DATABASE_URL)}

_CUSTOMERS = "example_site.customers"
_BENCH_CUSTOMERS = "benchmarks.apps.BenchCustomersConfig"
SHARED_APPS = [_BENCH_CUSTOMERS if app == _CUSTOMERS else app for app in _site.SHARED_APPS]
INSTALLED_APPS = [_BENCH_CUSTOMERS if app == _CUSTOMERS else app for app in _site.INSTALLED_APPS]
DEBUG = False  # as in production: no per-query log besides CaptureQueriesContext's

# The platform account must never reach the network from a benchmark: a tenant that fell back to
# it by mistake fails loudly (connection refused on a discard port) instead of calling Mailgun.
_platform: dict[str, Any] = {**_site.PLATFORM_MAILGUN, "api_url": "https://127.0.0.1:9/v3/"}
_default: Any
_mailers: Any = getattr(_site, "MAILERS", None)
if _mailers is not None:  # Django 6.1+
    MAILERS = {**_mailers, "platform": {**_mailers["platform"], "OPTIONS": _platform}}
    _default = "platform"
else:
    _default = {"BACKEND": "mailgun", "OPTIONS": _platform}

_tenantmail: dict[str, Any] = {
    **_site.TENANTMAIL,
    "DEFAULT": _default,
    "ALLOWED_BACKENDS": [*BACKEND_ALIASES.values(), TEST_BACKEND],
    # Like Mailgun's: a tenant on it must set its own key.
    "REQUIRED_OPTIONS": {TEST_BACKEND: ["api_key"]},
}
TENANTMAIL = _tenantmail
LOGGING = {"version": 1, "disable_existing_loggers": False}

# The queue section's baseline (benchmarks/queue_bench.py): django-post_office's own queue,
# registered in the benchmark's settings only, never by the library. It sends through plain
# Anymail with one account; its workers get the fake ESP's URL in their environment.
if importlib.util.find_spec("post_office") is not None:
    SHARED_APPS = [*SHARED_APPS, "post_office"]
    INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]
    _POST_OFFICE_BACKEND = "benchmarks.queue_backends.PostOfficeMailgun"
    if _mailers is not None:  # Django 6.1+: post_office delivers through a MAILERS alias
        MAILERS = {**MAILERS, "post_office": {"BACKEND": _POST_OFFICE_BACKEND}}
        POST_OFFICE: dict[str, Any] = {"DEFAULT_MAILER": "post_office"}
    else:
        POST_OFFICE = {"BACKENDS": {"default": _POST_OFFICE_BACKEND}}

# Worker processes keep their database connection between tasks, as deployed workers do
# (db_worker calls close_old_connections() after every task: with the default 0, each message
# would open a new PostgreSQL connection). The benchmark process itself has no request cycle,
# so this changes nothing for the other rows.
DATABASES["default"]["CONN_MAX_AGE"] = 600
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
