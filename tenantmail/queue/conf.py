"""Typed, lazy access to ``settings.TENANTMAIL["QUEUE"]`` (read on first use, re-read on change)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from ..conf import _error as core_error
from ..conf import _number as core_number
from ..exceptions import TenantMailConfigurationError

#: The task priority range of django.tasks (and the backport).
MIN_PRIORITY = -100


@dataclass(frozen=True)
class QueueSettings:
    task_backend: str = "default"
    queue_name: str = "default"
    max_attempts: int = 5
    backoff_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    lease_seconds: float = 300.0
    recover_every_seconds: float = 60.0
    requeue_after_seconds: float = 3600.0
    fair_share: int = 50
    rate_limit: float | None = None
    tenant_rate_limits: Mapping[str, float | None] = field(default_factory=dict)
    rate_limit_storage: str | None = None
    prune_after_days: int = 30
    concurrency: int = 2
    batch_size: int = 50
    threads: int = 4


_KNOWN_KEYS = frozenset(
    {
        "TASK_BACKEND",
        "QUEUE_NAME",
        "MAX_ATTEMPTS",
        "BACKOFF_SECONDS",
        "BACKOFF_MAX_SECONDS",
        "LEASE_SECONDS",
        "RECOVER_EVERY_SECONDS",
        "REQUEUE_AFTER_SECONDS",
        "FAIR_SHARE",
        "RATE_LIMIT",
        "TENANT_RATE_LIMITS",
        "RATE_LIMIT_STORAGE",
        "PRUNE_AFTER_DAYS",
        "CONCURRENCY",
        "BATCH_SIZE",
        "THREADS",
    }
)


SECTION = 'TENANTMAIL["QUEUE"]'


def _error(key: str, message: str) -> TenantMailConfigurationError:
    return core_error(key, message, section=SECTION)


def _number(raw: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    return float(core_number(raw, key, default, minimum=minimum, section=SECTION))


def _rate(value: object, key: str) -> float | None:
    if value is None:
        return None
    problem = "must be a positive number of messages per second, or None (no limit)"
    try:
        rate = _number({key: value}, key, 0, minimum=0)
    except TenantMailConfigurationError:
        raise _error(key, problem) from None
    if rate <= 0:
        raise _error(key, problem)
    return rate


def _name(raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise _error(key, "must be a non-empty string")
    return value


def _storage(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value:
        raise _error(
            "RATE_LIMIT_STORAGE",
            'must be None (the database) or a `limits` storage URI such as "redis://host:6379"',
        )
    return value


def load_queue_settings() -> QueueSettings:
    tenantmail = getattr(settings, "TENANTMAIL", {})
    raw = tenantmail.get("QUEUE", {}) if isinstance(tenantmail, Mapping) else {}
    if not isinstance(raw, Mapping):
        raise TenantMailConfigurationError("must be a dict", setting='TENANTMAIL["QUEUE"]')
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise TenantMailConfigurationError(
            f"unknown keys {sorted(unknown)}; expected some of {sorted(_KNOWN_KEYS)}",
            setting='TENANTMAIL["QUEUE"]',
        )
    d = QueueSettings()
    overrides = raw.get("TENANT_RATE_LIMITS", {})
    if not isinstance(overrides, Mapping):
        raise _error("TENANT_RATE_LIMITS", "must be a dict {schema name: messages per second}")
    backoff = _number(raw, "BACKOFF_SECONDS", d.backoff_seconds, minimum=0)
    backoff_max = _number(raw, "BACKOFF_MAX_SECONDS", d.backoff_max_seconds, minimum=0)
    if backoff_max < backoff:
        raise _error("BACKOFF_MAX_SECONDS", "must be >= BACKOFF_SECONDS")
    return QueueSettings(
        task_backend=_name(raw, "TASK_BACKEND", d.task_backend),
        queue_name=_name(raw, "QUEUE_NAME", d.queue_name),
        max_attempts=int(_number(raw, "MAX_ATTEMPTS", d.max_attempts, minimum=1)),
        backoff_seconds=backoff,
        backoff_max_seconds=backoff_max,
        lease_seconds=_number(raw, "LEASE_SECONDS", d.lease_seconds, minimum=1),
        recover_every_seconds=_number(
            raw, "RECOVER_EVERY_SECONDS", d.recover_every_seconds, minimum=0
        ),
        requeue_after_seconds=_number(
            raw, "REQUEUE_AFTER_SECONDS", d.requeue_after_seconds, minimum=1
        ),
        fair_share=int(_number(raw, "FAIR_SHARE", d.fair_share, minimum=1)),
        rate_limit=_rate(raw.get("RATE_LIMIT"), "RATE_LIMIT"),
        tenant_rate_limits={
            str(schema): _rate(value, "TENANT_RATE_LIMITS") for schema, value in overrides.items()
        },
        rate_limit_storage=_storage(raw.get("RATE_LIMIT_STORAGE")),
        prune_after_days=int(_number(raw, "PRUNE_AFTER_DAYS", d.prune_after_days, minimum=0)),
        concurrency=int(_number(raw, "CONCURRENCY", d.concurrency, minimum=1)),
        batch_size=int(_number(raw, "BATCH_SIZE", d.batch_size, minimum=1)),
        threads=int(_number(raw, "THREADS", d.threads, minimum=1)),
    )


@cache
def get_queue_settings() -> QueueSettings:
    return load_queue_settings()


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "TENANTMAIL":
        get_queue_settings.cache_clear()
