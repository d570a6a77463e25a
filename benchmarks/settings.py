"""Benchmark settings: the example site's, on a database of their own.

``database_url("bench")`` runs first: without ``DATABASE_URL`` it starts an embedded PostgreSQL
under ``.pgdata/bench`` and exports its URL, so ``example_site.settings`` (imported next) reuses
that server instead of starting the demo's.
"""

from __future__ import annotations

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
