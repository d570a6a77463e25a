"""Per-tenant send rate limits (placeholder: no limit configured means no cost)."""

from __future__ import annotations

from .conf import get_queue_settings


def limit_for(schema: str) -> float | None:
    qs = get_queue_settings()
    if schema in qs.tenant_rate_limits:
        return qs.tenant_rate_limits[schema]
    return qs.rate_limit


def reserve(schema: str) -> float:
    """Take one send slot for ``schema``; returns 0, or the seconds to wait before trying."""
    if limit_for(schema) is None:
        return 0.0
    return 0.0
