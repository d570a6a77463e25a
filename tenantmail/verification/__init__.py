"""Verifying a tenant's mail settings end to end, and sending a test message.

Owns: the stages (resolve -> connect -> TLS -> authenticate -> sender -> test message, stopping
at the first failure), one prober per transport (HTTP ESPs, Amazon SES, SMTP), the report, the
per-tenant throttle and the stored result (``mail_verified_at``/``mail_verification`` on
:class:`~tenantmail.models.TenantMailMixin`). Used by ``manage.py tenantmail_verify`` and the
admin action "Verify mail settings".

Built on the core: the resolver and :func:`~tenantmail.diagnosis.tenant_problems` (resolve), the
factory's hardened inner backend (its endpoint, timeout, session and credentials), the endpoint
rules of :mod:`tenantmail.endpoints`, and :class:`~tenantmail.backends.TenantBackend` for the
test message. Nothing here runs on the send path.
"""

from __future__ import annotations

from .report import (
    STAGES,
    RecipientNotAllowed,
    StageResult,
    VerificationError,
    VerificationReport,
    VerificationThrottled,
)
from .run import is_staff_address, verify

__all__ = [
    "STAGES",
    "RecipientNotAllowed",
    "StageResult",
    "VerificationError",
    "VerificationReport",
    "VerificationThrottled",
    "is_staff_address",
    "verify",
]
