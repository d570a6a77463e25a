"""Probing an SMTP account the way Django's SMTP backend would talk to it.

Connection settings (host, port, implicit TLS or STARTTLS, the TLS context, credentials,
timeout) are read from the inner backend built for the tenant, so the probe and a send cannot
disagree. The sender stage issues ``MAIL FROM`` and then ``RSET``: nothing is sent.
"""

from __future__ import annotations

import smtplib
from typing import Any

from django.core.mail.utils import DNS_NAME

from ..masking import mask
from . import network
from .probe import Prober, Target, close_quietly
from .report import Outcome, StageFailed, ok, skipped


class SMTPProber(Prober):
    def __init__(self, target: Target) -> None:
        super().__init__(target)
        backend: Any = target.backend
        self.backend = backend
        self.host = str(backend.host)
        self.port = int(backend.port)
        self.timeout = float(backend.timeout or target.timeout)
        self._sock: Any = None
        self.smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"the SMTP server {network.where(self.host, self.port)}"

    def connect(self) -> Outcome:
        self._sock = network.connect(self.host, self.port, self.timeout, self.target.check)
        return ok(network.where(self.host, self.port))

    def _session(self, sock: Any) -> smtplib.SMTP:
        """An smtplib session on the already connected (and checked) socket."""
        smtp = smtplib.SMTP(local_hostname=DNS_NAME.get_fqdn(), timeout=self.timeout)
        smtp._host = self.host  # type: ignore[attr-defined]  # starttls() checks the cert for it
        smtp.sock = sock
        self.smtp = smtp
        code, _reply = smtp.getreply()
        if code != 220:
            raise StageFailed(f"{self.where} greeted with {self._code(code)}, not 220")
        return smtp

    @staticmethod
    def _code(code: int) -> str:
        return str(code) if 200 <= code < 600 else "something other than SMTP"

    def tls(self) -> Outcome:
        sock, self._sock = self._sock, None
        backend = self.backend
        try:
            if backend.use_ssl:
                tls_sock = network.handshake(sock, backend.ssl_context, self.host, self.port)
                self._session(tls_sock)
                return ok(f"implicit TLS, certificate valid for {self.host}")
            smtp = self._session(sock)
            if not backend.use_tls:
                return skipped(f"{self.where} is used without TLS: use_tls and use_ssl are off")
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise StageFailed(f"{self.where} does not offer STARTTLS, but use_tls is on")
            try:
                smtp.starttls(context=backend.ssl_context)
            except smtplib.SMTPResponseException as error:
                raise StageFailed(
                    f"{self.where} refused STARTTLS ({self._code(error.smtp_code)})"
                ) from None
        except StageFailed:
            raise
        except (smtplib.SMTPException, OSError) as error:
            if isinstance(error, OSError) and hasattr(error, "verify_message"):
                raise StageFailed(
                    f"TLS failed at {network.where(self.host, self.port)}: the certificate is not "
                    f"valid for {self.host} ({error.verify_message})"
                ) from None
            raise StageFailed(
                f"{self.where} dropped the session ({type(error).__name__})"
            ) from None
        return ok(f"STARTTLS, certificate valid for {self.host}")

    def authenticate(self) -> Outcome:
        smtp = self.smtp
        assert smtp is not None
        username = str(self.backend.username or "")
        if not username:
            return skipped("no username configured: the server is used without SMTP AUTH")
        password = str(self.backend.password or "")
        shown = f"user {username} with password{mask(password)}"
        try:
            smtp.login(username, password)
        except smtplib.SMTPAuthenticationError as error:
            raise StageFailed(
                f"authentication failed at {self.where} ({self._code(error.smtp_code)}) for {shown}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise StageFailed(f"{self.where} does not offer SMTP AUTH") from None
        except (smtplib.SMTPException, OSError) as error:
            raise StageFailed(
                f"SMTP AUTH at {self.where} failed ({type(error).__name__})"
            ) from None
        return ok(f"{shown} accepted")

    def sender(self) -> Outcome:
        smtp = self.smtp
        assert smtp is not None
        address = self.target.from_email
        try:
            smtp.ehlo_or_helo_if_needed()  # done by AUTH when there was one; MAIL needs it
            code, _reply = smtp.mail(address)
            if code == 250:
                smtp.rset()
        except (smtplib.SMTPException, OSError) as error:
            raise StageFailed(
                f"{self.where} dropped the session ({type(error).__name__})"
            ) from None
        if code != 250:
            raise StageFailed(f"{self.where} refused MAIL FROM:<{address}> ({self._code(code)})")
        return ok(f"MAIL FROM:<{address}> accepted")

    def close(self) -> None:
        close_quietly(self._sock)
        if self.smtp is not None and self.smtp.sock is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
