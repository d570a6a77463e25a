"""Where used single-use webhook signatures are remembered (Mailgun's): ``claim`` and ``release``.

``TENANTMAIL["WEBHOOKS"]["REPLAY_CACHE"]`` names a Django cache (default ``"default"``). A shared
cache (Redis, Memcached, the database) covers every process of the site; its ``add()`` is atomic
there, so two workers never both accept one signature. A ``LocMemCache`` is process-local anyway,
and it forgets by count (300 entries by default, then a third is culled): a captured signature
would be accepted again after a few hundred newer events, within its max age. For it, this module
keeps the signatures itself, in-process, for their whole validity window, and cheaper per request.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from .conf import get_webhook_settings


class LocalReplayStore:
    """In-process ``key -> expiry`` with a fixed time to live: expired in insertion order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()

    def add(self, key: str, ttl: float) -> bool:
        """True if ``key`` was not there (it is now, for ``ttl`` seconds)."""
        now = time.monotonic()
        with self._lock:
            order = self._order
            while order and order[0][0] <= now:
                expiry, old = order.popleft()
                if self._expiry.get(old) == expiry:  # not re-added (after a release) since
                    del self._expiry[old]
            if key in self._expiry:
                return False
            expiry = now + ttl
            self._expiry[key] = expiry
            order.append((expiry, key))
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._expiry.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()
            self._order.clear()

    def __len__(self) -> int:
        return len(self._expiry)

    def _after_fork_in_child(self) -> None:
        # A parent thread may have held the lock at fork(): it would stay held in the child.
        self._lock = threading.Lock()


local_store = LocalReplayStore()
os.register_at_fork(after_in_child=lambda: local_store._after_fork_in_child())


def _store() -> Any:
    cache = caches[get_webhook_settings().replay_cache]
    return local_store if isinstance(cache, LocMemCache) else cache


def claim(key: str, ttl: float) -> bool:
    """Remember ``key`` for ``ttl`` seconds; False if it was already remembered (a replay)."""
    store = _store()
    if store is local_store:
        return bool(local_store.add(key, ttl))
    return bool(store.add(key, 1, ttl))


def release(key: str) -> None:
    """Forget ``key`` (its request failed after the claim: the sender will retry it)."""
    _store().delete(key)
