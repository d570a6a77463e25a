"""Per-tenant send rate limits that hold across every worker process.

The limit is ``TENANT_RATE_LIMITS[schema]`` if set there (``None`` = unlimited), else
``RATE_LIMIT`` (messages per second; ``None``, the default, means no limit and no cost). A
tenant may send bursts of up to one second's worth (at least one message), then is spaced out.

State lives where the workers already share it: the database, by default, as GCRA (the
"generic cell rate algorithm", a token bucket in one timestamp per tenant) in one atomic
``INSERT … ON CONFLICT DO UPDATE … RETURNING`` on ``SendRate``, with the database's clock, so
no lock is held and clocks of worker hosts don't matter. With ``RATE_LIMIT_STORAGE`` set to a
``limits`` storage URI (``redis://…``, ``memcached://…``), the maintained ``limits`` library's
moving-window limiter is used instead.
"""

from __future__ import annotations

import math
import time
from functools import cache
from typing import Any

from django.db import connections

from ..conf import get_settings
from ..models import SendRate
from .conf import get_queue_settings

_GCRA_SQL = """
INSERT INTO {table} (key, tat) VALUES (%s, clock_timestamp() + make_interval(secs => %s))
ON CONFLICT (key) DO UPDATE
    SET tat = GREATEST({table}.tat, clock_timestamp()) + make_interval(secs => %s)
    WHERE GREATEST({table}.tat, clock_timestamp()) + make_interval(secs => %s)
          - clock_timestamp() <= make_interval(secs => %s)
RETURNING tat
"""
_WAIT_SQL = "SELECT EXTRACT(EPOCH FROM (tat - clock_timestamp())) FROM {table} WHERE key = %s"


def limit_for(schema: str) -> float | None:
    qs = get_queue_settings()
    if schema in qs.tenant_rate_limits:
        return qs.tenant_rate_limits[schema]
    return qs.rate_limit


def reserve(schema: str) -> float:
    """Take one send slot for ``schema`` (blank: platform mail).

    Returns 0 when the message may go now, else the seconds to wait before trying again.
    """
    rate = limit_for(schema)
    if rate is None:
        return 0.0
    key = f"tenantmail:{schema or '(platform)'}"
    storage = get_queue_settings().rate_limit_storage
    if storage:
        return _reserve_limits(storage, key, rate)
    return _reserve_database(key, rate)


def _reserve_database(key: str, rate: float) -> float:
    interval = 1 / rate
    burst = max(1.0, interval)  # one second's worth, and at least one message
    db = get_settings().tenant_db_alias
    connection = connections[db]
    table = connection.ops.quote_name(SendRate._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_GCRA_SQL.format(table=table), [key, interval, interval, interval, burst])
        if cursor.fetchone() is not None:
            return 0.0
        cursor.execute(_WAIT_SQL.format(table=table), [key])
        row = cursor.fetchone()
    ahead = float(row[0]) if row else 0.0
    # The next slot opens when the bucket has drained below the burst again.
    return max(ahead - burst + interval, 0.001)


@cache
def _limiter(storage_uri: str) -> Any:
    from limits import storage, strategies

    return strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))


def _reserve_limits(storage_uri: str, key: str, rate: float) -> float:
    from limits import RateLimitItemPerSecond

    # `limits` counts whole messages per window: r/s as ceil(r) per ceil(r)/r seconds.
    amount = max(1, math.ceil(rate))
    item = RateLimitItemPerSecond(amount, max(1, round(amount / rate)))
    limiter = _limiter(storage_uri)
    if limiter.hit(item, key):
        return 0.0
    reset_at, _remaining = limiter.get_window_stats(item, key)
    return max(float(reset_at) - time.time(), 0.001)
