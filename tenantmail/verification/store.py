"""The per-tenant throttle and the stored result, both on the tenant row.

The throttle is one conditional ``UPDATE`` of ``mail_verified_at``: the database decides, so it
holds across processes and servers (two concurrent claims: the second re-reads the row after the
first commits and matches nothing).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import models
from django.db.models import Q

from ..conf import TenantMailSettings
from .report import VerificationError, VerificationReport, VerificationThrottled

SETTING = 'TENANTMAIL["VERIFY_INTERVAL"]'


def _rows(tenant: Any, s: TenantMailSettings) -> models.QuerySet[Any]:
    rows: models.QuerySet[Any] = type(tenant)._default_manager.using(s.tenant_db_alias)
    return rows.filter(pk=tenant.pk)


def _update(rows: models.QuerySet[Any], **values: Any) -> int:
    # Plain QuerySet.update, not TenantMailQuerySet's: these columns never reach a send, so the
    # process-wide tenant cache (the warm send path's) need not be dropped for them.
    return models.QuerySet.update(rows, **values)


def claim(tenant: Any, s: TenantMailSettings, *, now: datetime.datetime, force: bool) -> None:
    """Take this tenant's verification slot, or raise :class:`VerificationThrottled`."""
    schema = str(tenant.schema_name)
    rows = _rows(tenant, s)
    interval = s.verify_interval
    claimable = rows
    if not force and interval > 0:
        since = now - datetime.timedelta(seconds=interval)
        claimable = rows.filter(Q(mail_verified_at__isnull=True) | Q(mail_verified_at__lte=since))
    if _update(claimable, mail_verified_at=now):
        return
    last = rows.values_list("mail_verified_at", flat=True).first()
    if last is None:
        raise VerificationError(f"tenant {schema!r}: no tenant row (was it deleted?)")
    ago = max((now - last).total_seconds(), 0.0)
    raise VerificationThrottled(
        f"tenant {schema!r}: verified {ago:.0f} s ago; {SETTING} allows one verification every "
        f"{interval:g} s, try again in {max(interval - ago, 1):.0f} s (operators: "
        "tenantmail_verify --force)"
    )


def store(tenant: Any, s: TenantMailSettings, report: VerificationReport) -> None:
    """Write the result (no secret: a stage name and a masked reason) and its time."""
    stored = report.as_stored()
    _update(_rows(tenant, s), mail_verified_at=report.checked_at, mail_verification=stored)
    tenant.mail_verified_at = report.checked_at
    tenant.mail_verification = stored
