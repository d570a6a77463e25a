"""A send that found no tenant at all: ``TENANTMAIL["UNRESOLVED"]`` decides what happens.

Only this path inspects the stack (to name the caller's file:line); a send with a tenant, or one
marked as platform mail, never gets here.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cache, lru_cache
from types import FrameType

from .conf import get_settings
from .exceptions import UnresolvedTenantError

logger = logging.getLogger("tenantmail")

SETTING = 'TENANTMAIL["UNRESOLVED"]'
_HOW_TO_FIX = (
    "wrap the send in sending_as(tenant) -- or sending_as(None) if this is platform mail -- or "
    "pass tenant=; in a thread pool, wrap the function with tenantmail.carry_tenant() so it "
    "inherits the caller's tenant"
)


def unresolved() -> None:
    """Raise, or warn naming the call site and return ``None`` (send as the platform)."""
    site = call_site()
    if get_settings().unresolved == "raise":
        raise UnresolvedTenantError(
            f"a send at {site} has no tenant context (no request tenant, schema_context(), "
            f'sending_as() or tenant=), and this setting is "raise"; {_HOW_TO_FIX}',
            setting=SETTING,
        )
    logger.warning(
        "tenantmail: a send at %s has no tenant context (no request tenant, schema_context(), "
        'sending_as() or tenant=), so it uses the platform account (%s is "platform"); %s',
        site,
        SETTING,
        _HOW_TO_FIX,
    )


@cache
def _plumbing() -> tuple[tuple[str, ...], str]:
    """(package directories, stdlib directory) whose frames are plumbing, not the caller."""
    import anymail
    import asgiref
    import django
    import django_tenants

    import tenantmail

    packages = (anymail, asgiref, django, django_tenants, tenantmail)
    dirs = tuple(_as_dir(os.path.dirname(m.__file__ or "")) for m in packages)
    return dirs, _as_dir(os.path.dirname(os.__file__))


def _as_dir(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


@lru_cache(maxsize=4096)  # realpath() is a few system calls; a stack repeats its files
def _is_plumbing(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen runpy>, <string>
        return True
    packages, stdlib = _plumbing()
    path = os.path.realpath(filename)
    if path.startswith(packages):
        return True
    # A Python without a venv keeps site-packages under the stdlib directory: those are not it.
    return path.startswith(stdlib) and not any(
        part in path for part in ("/site-packages/", "/dist-packages/")
    )


def call_site(frame: FrameType | None = None) -> str:
    """``file:line`` of the innermost frame outside Django, Anymail, tenantmail and the stdlib."""
    frame = frame or sys._getframe(1)
    while frame is not None:
        if not _is_plumbing(frame.f_code.co_filename):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"
