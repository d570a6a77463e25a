"""What a verification found: one result per stage, and the line a person reads."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from ..exceptions import TenantMailError

#: The stages, in the order they run; the first failure stops the rest.
STAGES: Final = ("resolve", "connect", "tls", "authenticate", "sender", "test_message")

Status = Literal["ok", "failed", "skipped", "not_run"]


class Outcome(NamedTuple):
    """What one stage says when it did not fail: ``ok`` or ``skipped``, and why."""

    status: Literal["ok", "skipped"]
    detail: str = ""


def ok(detail: str = "") -> Outcome:
    return Outcome("ok", detail)


def skipped(detail: str) -> Outcome:
    return Outcome("skipped", detail)


class StageFailed(Exception):
    """Raised by a prober: ``detail`` is already masked and safe to show and store."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class VerificationError(TenantMailError):
    """A verification that was not run (the settings were not judged)."""


class VerificationThrottled(VerificationError):
    """The tenant was verified less than ``TENANTMAIL["VERIFY_INTERVAL"]`` seconds ago."""


class RecipientNotAllowed(VerificationError):
    """``send_to`` is not the address of an active staff user."""


@dataclass(frozen=True)
class StageResult:
    name: str
    status: Status
    detail: str = ""

    def label(self) -> str:
        return f"{self.name} {self.status}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class VerificationReport:
    """Every stage's result for one tenant. Nothing in it is secret (details are masked)."""

    tenant: str
    stages: tuple[StageResult, ...]
    checked_at: datetime.datetime

    @property
    def ok(self) -> bool:
        return self.failed_stage is None

    @property
    def failed_stage(self) -> StageResult | None:
        return next((s for s in self.stages if s.status == "failed"), None)

    @property
    def reason(self) -> str:
        """``"acme: authentication failed at Mailgun (401) with key…1e5b"``; "" when ok."""
        failed = self.failed_stage
        return "" if failed is None else f"{self.tenant}: {failed.detail}"

    def stage(self, name: str) -> StageResult:
        return next(s for s in self.stages if s.name == name)

    def line(self) -> str:
        """One line for a terminal or a log: the outcome first, then every stage."""
        stages = "; ".join(s.label() for s in self.stages if s.status != "not_run")
        if self.ok:
            return f"{self.tenant}: ok [{stages}]"
        failed = self.failed_stage
        assert failed is not None
        return f"{self.reason} [failed at {failed.name}; {stages}]"

    def as_stored(self) -> dict[str, Any]:
        """What ``mail_verification`` holds: JSON, no secret."""
        failed = self.failed_stage
        return {
            "ok": self.ok,
            "stage": None if failed is None else failed.name,
            "reason": self.reason,
            "checked_at": self.checked_at.isoformat(),
            "stages": {s.name: s.status for s in self.stages},
        }
