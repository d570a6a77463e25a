"""What is being verified (:class:`Target`) and the prober interface every transport fills in."""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from email.utils import parseaddr

from django.core.mail.backends.base import BaseEmailBackend

from ..config import MailConfig
from .network import PeerCheck
from .report import Outcome, skipped


@dataclass(frozen=True)
class Target:
    """One tenant's resolved config and the (unopened, hardened) inner backend built for it."""

    schema: str
    config: MailConfig
    backend: BaseEmailBackend
    #: The From address the test message would carry (bare address).
    from_email: str
    #: The endpoint rule for the connected address (BLOCK_PRIVATE_ENDPOINTS), tenant accounts.
    check: PeerCheck | None
    #: Connect/read timeout for probes of this account.
    timeout: float

    @property
    def from_domain(self) -> str:
        return parseaddr(self.from_email)[1].rpartition("@")[2].lower()


class Prober:
    """One transport's stages between *resolve* and *test message*. Each returns an
    :class:`~.report.Outcome` or raises :class:`~.report.StageFailed` with a masked detail."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def connect(self) -> Outcome:
        return skipped("no network endpoint to check for this backend")

    def tls(self) -> Outcome:
        return skipped("no network endpoint to check for this backend")

    def authenticate(self) -> Outcome:
        return skipped("no read-only check for this backend; the test message checks it")

    def sender(self) -> Outcome:
        return skipped("no read-only check for this backend; the test message checks it")

    def close(self) -> None:
        """Release whatever the stages opened."""


def close_quietly(sock: ssl.SSLSocket | object | None) -> None:
    close = getattr(sock, "close", None)
    if close is not None:
        with contextlib.suppress(OSError):
            close()
