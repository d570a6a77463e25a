"""Carrying the current tenant into threads and executors.

Two things say who is sending, and neither follows a function into a thread pool on its own:
:func:`~tenantmail.sending_as` is a contextvar (asyncio tasks and ``asyncio.to_thread`` copy it;
``ThreadPoolExecutor.submit`` and ``loop.run_in_executor`` do not), and django-tenants keeps the
schema on the database connection, which is per thread. :func:`carry_tenant` captures both when
it wraps, and re-enters both around the call in the worker.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import connections

from .conf import get_settings


def carry_tenant[**P, R](fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` so it runs with the tenant that is current *now*, in whatever thread.

    Captures every contextvar (``sending_as()`` among them) and django-tenants' connection
    tenant (request tenant, ``tenant_context()``, ``schema_context()``). In the worker the
    connection's previous tenant is restored afterwards, so a pooled thread does not keep it.
    """
    context = contextvars.copy_context()
    alias = get_settings().tenant_db_alias
    tenant = getattr(connections[alias], "tenant", None)

    @functools.wraps(fn)
    def run_as_tenant(*args: P.args, **kwargs: P.kwargs) -> R:
        connection: Any = connections[alias]  # django-tenants' DatabaseWrapper
        previous = getattr(connection, "tenant", None)
        if tenant is not None and tenant is not previous:
            connection.set_tenant(tenant)
        try:
            # A copy per call: one Context cannot be entered by two threads at once.
            return context.copy().run(fn, *args, **kwargs)
        finally:
            if tenant is not None and tenant is not previous:
                if previous is None:
                    connection.set_schema_to_public()
                else:
                    connection.set_tenant(previous)

    return run_as_tenant


class TenantThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run as the tenant current at ``submit()``.

    ``loop.run_in_executor(executor, fn)`` calls ``submit()`` too, so it is covered as well.
    """

    def submit[R](self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return super().submit(carry_tenant(fn), *args, **kwargs)
