"""The warm send's shortcut: this thread's last (connection tenant -> config), checked cheaply.

A web worker's thread sends, request after request, for the tenant instance django-tenants put
on its database connection. Resolving that from scratch on every send (django's connection
handler through asgiref's ``Local``, activation, the memo scan) touches a lot of code and data
between two of Anymail's payload builds, where CPU caches are cold (BENCHMARKS.md). So each
thread remembers the last tenant instance it resolved *from the connection, through the
default* ``get_mail_config()``, with the resolution memo that matched it; the next send uses it
only if all of these still hold:

- no ``tenant=``, no overrides, no :func:`~tenantmail.sending_as` block;
- the connection's tenant is *the same object* (identity, not equality; the shortcut holds it,
  so its id cannot be reused), and its model still reads the default ``get_mail_config()``;
- neither the resolution memo nor the tenant cache was invalidated since (each counts its
  invalidations: any settings change, any tenant save, rename, delete or ``QuerySet.update``);
- the instance's schema name is unchanged and its primary key still set (not deleted);
- its four mail fields still equal the memo's copies -- the same comparison as the memo itself,
  so an unsaved in-place edit misses and is validated again.

Anything else takes the general path, which is what decides; this only repeats its last answer.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from django.db import connections

from .conf import get_settings
from .models import TenantMailMixin
from .tenancy import _UNSET, _sending_as, tenant_cache

if TYPE_CHECKING:
    from .config import MailConfig, _Memo

_ThreadCriticalLocal: type | None
try:  # asgiref's thread-critical Local (Django's connection handler): read its storage directly
    from asgiref.local import _ThreadCriticalLocal
except ImportError:  # pragma: no cover  (another asgiref: the handler's own lookup is used)
    _ThreadCriticalLocal = None

_get_running_loop = asyncio._get_running_loop  # returns None outside a loop; never raises


class _Last(threading.local):
    """This thread's last connection-tenant resolution (class attributes are the empty state)."""

    instance: Any = None
    schema: str = ""
    pk_attname: str = ""
    alias: str = "default"  #: TENANT_DB_ALIAS then (a change of it bumps the generations)
    memo: _Memo | None = None
    memo_clears: int = -1  #: the generations read before the memo lookup
    tenant_cache_generation: int = -1


_last = _Last()


#: Times the resolution memo was cleared (bumped by ``config``; the tenant cache counts its own).
_memo_clears = 0


def memo_cleared() -> None:
    """Called whenever the resolution memo is cleared: every thread's shortcut goes stale."""
    global _memo_clears
    _memo_clears += 1


def generations() -> tuple[int, int]:
    """Invalidation counts of the resolution memo and of the tenant cache."""
    return (_memo_clears, tenant_cache._generation)


def connection_tenant(alias: str) -> object:
    """``connections[alias].tenant`` without asgiref's per-call ``get_running_loop()`` raise.

    In a sync thread asgiref's thread-critical ``Local`` *is* a ``threading.local``; that is
    read directly. Anywhere else (a running event loop, a connection not created yet in this
    thread, another asgiref) Django's own lookup answers.
    """
    local = getattr(connections, "_connections", None)  # private: another Django falls back
    if type(local) is _ThreadCriticalLocal and _get_running_loop() is None:
        wrapper = getattr(object.__getattribute__(local, "_storage"), alias, None)
        if wrapper is not None:
            return getattr(wrapper, "tenant", None)
    return getattr(connections[alias], "tenant", None)


def lookup() -> MailConfig | None:
    """The config the general path gave for this thread's connection tenant, if still valid.

    It runs on every warm send with the CPU's caches cold (BENCHMARKS.md, row 6), so it reads
    the state itself rather than through generations(), connection_tenant() and
    _Memo.matches_parts(): each call left out is a few cache misses less.
    """
    last = _last
    memo = last.memo
    if (
        memo is None
        or last.memo_clears != _memo_clears
        or last.tenant_cache_generation != tenant_cache._generation
        or _sending_as.get() is not _UNSET
    ):
        return None
    # connection_tenant(last.alias)
    local = getattr(connections, "_connections", None)
    wrapper = None
    if type(local) is _ThreadCriticalLocal and _get_running_loop() is None:
        wrapper = getattr(object.__getattribute__(local, "_storage"), last.alias, None)
    if wrapper is None:
        wrapper = connections[last.alias]
    instance = getattr(wrapper, "tenant", None)
    if (
        instance is not last.instance
        or type(instance).get_mail_config is not _DEFAULT_GET_MAIL_CONFIG  # patched since
    ):
        return None
    fields = instance.__dict__
    source = memo.source
    if (
        source is None
        or fields.get("schema_name") != last.schema
        or fields.get(last.pk_attname) is None
    ):
        return None
    try:
        # memo.matches_parts() for the fields as the default get_mail_config() reads them
        # (memo.overrides is empty: only override-free resolutions are remembered).
        options = fields["mail_options"]
        if options is None:
            options = {}
        defaults = fields["mail_defaults"]
        same = (
            memo.options_type is type(options)
            and source.backend == (fields["mail_backend"] or None)
            and source.subaccount == (fields["mail_subaccount"] or "")
            and source.options == options
            and source.defaults == (defaults if defaults is not None else {})
        )
    except Exception:  # deferred since (KeyError), or an __eq__ that raises: the general path
        return None
    return memo.config if same else None


_DEFAULT_GET_MAIL_CONFIG = TenantMailMixin.get_mail_config


def remember(instance: Any, schema: str, memo: _Memo, seen: tuple[int, int]) -> None:
    """Keep a memo hit for ``instance`` (``seen``: the generations read *before* the lookup)."""
    last = _last
    last.instance = instance
    last.schema = schema
    last.pk_attname = instance._meta.pk.attname
    last.alias = get_settings().tenant_db_alias
    last.memo = memo
    last.memo_clears, last.tenant_cache_generation = seen


def forget() -> None:
    """Drop this thread's shortcut (for tests: the next send takes the general path)."""
    last = _last
    last.instance = last.memo = None
    last.memo_clears = last.tenant_cache_generation = -1
