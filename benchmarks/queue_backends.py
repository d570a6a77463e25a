"""The queue section's baseline backend: plain Anymail Mailgun with one account (no tenants).

django-post_office builds its backend without options on Django < 6.1, so the account and the
fake ESP's URL (a new port each run) come from the environment the benchmark sets.
"""

from __future__ import annotations

import os
from typing import Any

from anymail.backends.mailgun import EmailBackend

from .common import RAW_KEY

#: The fake ESP's Mailgun URL, set by benchmarks/queue_bench.py for the worker processes.
URL_ENV = "TENANTMAIL_BENCH_MAILGUN_URL"


class PostOfficeMailgun(EmailBackend):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("api_key", RAW_KEY)
        kwargs.setdefault("api_url", os.environ.get(URL_ENV, "https://127.0.0.1:9/mailgun/v3/"))
        super().__init__(**kwargs)
