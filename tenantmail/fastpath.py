"""The warm send's shortcut: this thread's last (connection tenant -> config), checked cheaply.

A web worker's thread sends, request after request, for the tenant instance django-tenants put
on its database connection. Resolving that from scratch on every send (django's connection
handler through asgiref's ``Local``, activation, the memo scan) touches a lot of code and data
between two of Anymail's payload builds, where CPU caches are cold (BENCHMARKS.md). So each
thread remembers, on its own connection wrapper, the last tenant instance it resolved *through
the default* ``get_mail_config()``, with the resolution memo that matched it; the next send
uses it only if all of these still hold:

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


#: Where a thread's shortcut is kept: on its own connection wrapper (the object django-tenants
#: puts the tenant on), as (instance, schema, pk attname, memo, memo clears, tenant cache
#: generation). The lookup reads the wrapper anyway, so this costs no thread-local of its own:
#: one object fewer to touch with the caches cold. A plain tuple: one read and an unpack.
_STATE = "_tenantmail_fastpath"

#: TENANT_DB_ALIAS as the last shortcut was remembered (a change of it bumps the generations).
_alias = "default"


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
    # The connection wrapper, as connection_tenant() finds it.
    local = getattr(connections, "_connections", None)
    if type(local) is _ThreadCriticalLocal and _get_running_loop() is None:
        wrapper = getattr(object.__getattribute__(local, "_storage"), _alias, None)
        if wrapper is None:  # no connection in this thread yet: nothing was remembered on it
            return None
    else:
        wrapper = connections[_alias]
    last: tuple[Any, str, str, _Memo, int, int] | None = wrapper.__dict__.get(_STATE)
    if last is None:
        return None
    instance, schema, pk_attname, memo, memo_clears, cache_generation = last
    if (
        memo_clears != _memo_clears
        or cache_generation != tenant_cache._generation
        or _sending_as.get() is not _UNSET
        or type(instance).get_mail_config is not _DEFAULT_GET_MAIL_CONFIG  # patched since
        or getattr(wrapper, "tenant", None) is not instance
    ):
        return None
    fields = instance.__dict__
    source = memo.source
    if source is None or fields.get("schema_name") != schema or fields.get(pk_attname) is None:
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
    global _alias
    _alias = alias = get_settings().tenant_db_alias
    state = (instance, schema, instance._meta.pk.attname, memo, *seen)
    setattr(connections[alias], _STATE, state)


def forget() -> None:
    """Drop this thread's shortcut (for tests: the next send takes the general path)."""
    vars(connections[_alias]).pop(_STATE, None)
