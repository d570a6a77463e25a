"""Probing an HTTP ESP account through the same hardened ``requests`` session a send uses.

The session comes from the inner backend's own ``create_session()``, so tenant endpoints get the
send path's rules (no redirects, ``BLOCK_PRIVATE_ENDPOINTS`` on the connected address) and
sub-account backends their request headers (Mailgun's ``X-Mailgun-On-Behalf-Of``). Responses
from the ESP are read for a status code and a few documented fields, never quoted: the host may
be one a tenant chose (see :mod:`tenantmail.endpoints`).
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from ..exceptions import TenantMailConfigurationError
from ..masking import mask
from . import network
from .probe import Prober, Target, close_quietly
from .report import Outcome, StageFailed, ok, skipped


def _seconds(timeout: object, default: float) -> float:
    if isinstance(timeout, tuple):  # requests' (connect, read)
        timeout = timeout[0]
    return float(timeout) if isinstance(timeout, int | float) and timeout > 0 else default


def ca_bundle(session: requests.Session) -> str | None:
    """The CA file ``requests`` would verify with for this session (its own lookup order)."""
    if isinstance(session.verify, str):
        return session.verify
    if session.trust_env:
        env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if env:
            return env
    return DEFAULT_CA_BUNDLE_PATH


class HTTPProber(Prober):
    """Connect and TLS for any requests-based Anymail backend; subclasses add the ESP's calls."""

    #: The ESP's name in reports.
    esp = "the ESP"
    #: The backend attribute holding the credential, and what to call it in a report.
    credential_attr = "api_key"
    credential_label = "key"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        backend: Any = target.backend
        self.api_url = str(backend.api_url)
        parts = urlsplit(self.api_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.timeout = _seconds(getattr(backend, "timeout", None), target.timeout)
        self.session: requests.Session = backend.create_session()
        self.response: requests.Response | None = None
        self._sock: Any = None

    @property
    def where(self) -> str:
        return network.where(self.host, self.port)

    def connect(self) -> Outcome:
        self._sock = network.connect(self.host, self.port, self.timeout, self.target.check)
        return ok(self.where)

    def tls(self) -> Outcome:
        sock, self._sock = self._sock, None
        if self.scheme != "https":
            close_quietly(sock)
            return skipped(f"{self.where} is plain http, without TLS")
        context = ssl.create_default_context(cafile=ca_bundle(self.session))
        close_quietly(network.handshake(sock, context, self.host, self.port))
        return ok(f"certificate valid for {self.host}")

    # -- the ESP's read-only calls ---------------------------------------------------------

    def credential(self) -> str:
        return str(getattr(self.target.backend, self.credential_attr, "") or "")

    def shown_credential(self) -> str:
        shown = mask(self.credential())
        return (
            f"{self.credential_label}{shown}"
            if shown.startswith("…")
            else (f"{self.credential_label} {shown}")
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        url = urljoin(self.api_url, path)
        try:
            response = self.session.get(url, timeout=self.timeout, allow_redirects=False, **kwargs)
        except TenantMailConfigurationError as error:  # BLOCK_PRIVATE_ENDPOINTS
            raise StageFailed(str(error)) from None
        except requests.TooManyRedirects:  # max_redirects = 0 on tenant sessions
            raise StageFailed(self._redirected("a redirect")) from None
        except requests.RequestException as error:
            raise StageFailed(
                f"{self.esp} at {self.where} did not answer ({type(error).__name__})"
            ) from None
        if 300 <= response.status_code < 400:
            raise StageFailed(self._redirected(f"a redirect ({response.status_code})"))
        return response

    def _redirected(self, what: str) -> str:
        return f"{self.esp} at {self.where} answered with {what}, which is not followed"

    def refused(self, response: requests.Response) -> None:
        """StageFailed for a rejected credential (401/403), naming it masked."""
        if response.status_code in (401, 403):
            raise StageFailed(
                f"authentication failed at {self.esp} ({response.status_code}) with "
                f"{self.shown_credential()}"
            )

    def unexpected(self, response: requests.Response, what: str) -> StageFailed:
        return StageFailed(f"{self.esp} answered {response.status_code} to {what}")

    def json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise StageFailed(
                f"{self.esp} at {self.where} answered {response.status_code} with something "
                "other than JSON"
            ) from None

    def close(self) -> None:
        close_quietly(self._sock)
        self.session.close()


class MailgunProber(HTTPProber):
    """Mailgun: ``GET /v3/domains/<domain>`` with basic auth ``api:<key>`` (Mailgun API reference,
    "Domains": "Fetches json representation of a domain", 401 for a bad key, 404 for a domain
    the account does not have; ``domain.state`` is ``active``, ``unverified`` or ``disabled``).
    One call answers both stages: a 404 means the key was accepted but the domain is unknown.
    https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Domains"""

    esp = "Mailgun"
    STATES = frozenset({"active", "unverified", "disabled"})

    @property
    def domain(self) -> str:
        backend: Any = self.target.backend
        return str(getattr(backend, "sender_domain", None) or self.target.from_domain)

    def shown_credential(self) -> str:
        shown = super().shown_credential()
        on_behalf_of = getattr(self.target.backend, "subaccount_id", None)
        return f"{shown} on behalf of {on_behalf_of}" if on_behalf_of else shown

    def authenticate(self) -> Outcome:
        response = self.get(
            f"domains/{quote(self.domain, safe='')}", auth=("api", self.credential())
        )
        self.refused(response)
        if response.status_code not in (200, 404):
            raise self.unexpected(response, f"GET domains/{self.domain}")
        self.response = response
        return ok(f"{self.shown_credential()} accepted")

    def sender(self) -> Outcome:
        response = self.response
        assert response is not None
        if response.status_code == 404:
            raise StageFailed(
                f"Mailgun has no sending domain {self.domain} in this account; add it in Mailgun "
                "or set sender_domain"
            )
        domain = self.json(response).get("domain") or {}
        state = domain.get("state") if isinstance(domain, dict) else None
        if state == "active":
            return ok(f"{self.domain} is active")
        shown = state if state in self.STATES else "in an unexpected state"
        raise StageFailed(
            f"Mailgun sending domain {self.domain} is {shown}, not active; finish its DNS "
            "verification in Mailgun"
        )


class PostmarkProber(HTTPProber):
    """Postmark: ``GET /server`` with ``X-Postmark-Server-Token`` (Postmark API reference,
    "Server": the server the token belongs to; 401 with ErrorCode 10 for a bad token). A server
    token cannot read sender signatures or domains (they need the account token), so the
    sender stage is left to the test message. https://postmarkapp.com/developer/api/server-api"""

    esp = "Postmark"
    credential_attr = "server_token"
    credential_label = "server token"

    def authenticate(self) -> Outcome:
        response = self.get(
            "server",
            headers={"X-Postmark-Server-Token": self.credential(), "Accept": "application/json"},
        )
        self.refused(response)
        if response.status_code != 200:
            raise self.unexpected(response, "GET /server")
        return ok(f"{self.shown_credential()} accepted")

    def sender(self) -> Outcome:
        return skipped(
            "a Postmark server token cannot read sender signatures; the test message checks "
            f"{self.target.from_email}"
        )


class SendGridProber(HTTPProber):
    """SendGrid: ``GET /v3/scopes`` with ``Authorization: Bearer <key>`` (SendGrid API reference,
    "API Key Permissions": "returns all the scopes assigned to the key you use to authenticate
    with it"). The sender stage asks for the ``mail.send`` scope.
    https://www.twilio.com/docs/sendgrid/api-reference/api-key-permissions/retrieve-a-list-of-scopes-for-which-this-user-has-access"""

    esp = "SendGrid"

    def authenticate(self) -> Outcome:
        response = self.get("scopes", headers={"Authorization": f"Bearer {self.credential()}"})
        self.refused(response)
        if response.status_code != 200:
            raise self.unexpected(response, "GET /v3/scopes")
        self.response = response
        return ok(f"{self.shown_credential()} accepted")

    def sender(self) -> Outcome:
        assert self.response is not None
        scopes = self.json(self.response).get("scopes")
        if isinstance(scopes, list) and "mail.send" in scopes:
            return ok("the key has the mail.send scope")
        raise StageFailed(
            "the SendGrid API key lacks the mail.send scope; create a key with Mail Send access"
        )


class SparkPostProber(HTTPProber):
    """SparkPost: ``GET /api/v1/account`` then ``GET /api/v1/sending-domains/<domain>`` with the
    bare key as ``Authorization`` and, for a sub-account, ``X-MSYS-SUBACCOUNT`` (SparkPost API
    reference, "Account", "Sending Domains": ``results.status.ownership_verified``).
    https://developers.sparkpost.com/api/sending-domains/"""

    esp = "SparkPost"

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": self.credential(), "Accept": "application/json"}
        subaccount = getattr(self.target.backend, "subaccount", None)
        if subaccount:
            headers["X-MSYS-SUBACCOUNT"] = str(subaccount)
        return headers

    def authenticate(self) -> Outcome:
        response = self.get("account", headers=self._headers())
        self.refused(response)
        if response.status_code != 200:
            raise self.unexpected(response, "GET /api/v1/account")
        return ok(f"{self.shown_credential()} accepted")

    def sender(self) -> Outcome:
        domain = self.target.from_domain
        response = self.get(f"sending-domains/{quote(domain, safe='')}", headers=self._headers())
        self.refused(response)
        if response.status_code == 404:
            raise StageFailed(f"SparkPost has no sending domain {domain} in this account")
        if response.status_code != 200:
            raise self.unexpected(response, f"GET sending-domains/{domain}")
        results = self.json(response).get("results") or {}
        status = results.get("status") if isinstance(results, dict) else None
        if isinstance(status, dict) and status.get("ownership_verified") is True:
            return ok(f"{domain} is verified")
        raise StageFailed(f"SparkPost sending domain {domain} is not verified")
