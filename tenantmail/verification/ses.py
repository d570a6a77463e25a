"""Probing an Amazon SES v2 account with the boto3 client the inner backend opens.

``GetAccount`` authenticates (and says whether sending is enabled); ``GetEmailIdentity`` says
whether the From domain -- or, failing that, the From address -- is verified for sending
(Amazon SES API v2 reference: "GetAccount", "GetEmailIdentity": ``VerifiedForSendingStatus``,
``NotFoundException`` for an identity the account does not have).
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_GetAccount.html and
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_GetEmailIdentity.html
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from ..masking import mask
from . import network
from .probe import Prober, Target, close_quietly
from .report import Outcome, StageFailed, ok, skipped

_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDeniedException",
        "ExpiredTokenException",
    }
)
_STATUSES = frozenset({"PENDING", "SUCCESS", "FAILED", "TEMPORARY_FAILURE", "NOT_STARTED"})


class SESProber(Prober):
    esp = "Amazon SES"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        backend: Any = target.backend
        backend.open()  # builds the boto3 client from the tenant's own session/client params
        self.client: Any = backend.client
        parts = urlsplit(str(self.client.meta.endpoint_url))
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.verify = (backend.client_params or {}).get("verify", True)
        self.account: dict[str, Any] = {}
        self._sock: Any = None

    @property
    def where(self) -> str:
        return network.where(self.host, self.port)

    def connect(self) -> Outcome:
        self._sock = network.connect(self.host, self.port, self.target.timeout, self.target.check)
        return ok(self.where)

    def tls(self) -> Outcome:
        sock, self._sock = self._sock, None
        if self.scheme != "https":
            close_quietly(sock)
            return skipped(f"{self.where} is plain http, without TLS")
        if self.verify is False:
            close_quietly(sock)
            return skipped("certificate checks are off (client_params verify=false)")
        from botocore.httpsession import get_cert_path  # type: ignore[import-untyped]

        cafile = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
        context = ssl.create_default_context(cafile=cafile if isinstance(cafile, str) else None)
        close_quietly(network.handshake(sock, context, self.host, self.port))
        return ok(f"certificate valid for {self.host}")

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )

        try:
            result: dict[str, Any] = getattr(self.client, operation)(**params)
        except ClientError as error:
            raise _ClientFailure(error) from None
        except BotoCoreError as error:
            raise StageFailed(
                f"{self.esp} at {self.where} did not answer ({type(error).__name__})"
            ) from None
        return result

    def authenticate(self) -> Outcome:
        key_id = (self.target.config.options.get("session_params") or {}).get("aws_access_key_id")
        shown = f"access key{mask(key_id)}" if key_id else "the configured credentials"
        try:
            self.account = self._call("get_account")
        except _ClientFailure as failure:
            if failure.status in (401, 403) or failure.code in _AUTH_CODES:
                raise StageFailed(
                    f"authentication failed at {self.esp} ({failure.status}) with {shown}"
                ) from None
            raise StageFailed(f"{self.esp} answered {failure.status} to GetAccount") from None
        return ok(f"{shown} accepted")

    def sender(self) -> Outcome:
        if self.account.get("SendingEnabled") is False:
            raise StageFailed("sending is disabled for this Amazon SES account (SendingEnabled)")
        address = self.target.from_email
        for identity in (self.target.from_domain, address):
            try:
                found = self._call("get_email_identity", EmailIdentity=identity)
            except _ClientFailure as failure:
                if failure.code == "NotFoundException" or failure.status == 404:
                    continue
                raise StageFailed(
                    f"{self.esp} answered {failure.status} to GetEmailIdentity"
                ) from None
            if found.get("VerifiedForSendingStatus") is True:
                return ok(f"{identity} is verified for sending")
            status = found.get("VerificationStatus")
            shown = status if status in _STATUSES else "unknown"
            raise StageFailed(
                f"{self.esp} identity {identity} is not verified for sending (status {shown})"
            )
        raise StageFailed(f"{self.esp} has no identity for {address} or its domain")


class _ClientFailure(Exception):
    """A botocore ClientError reduced to its status and code (its message may quote the body)."""

    def __init__(self, error: Any) -> None:
        response = getattr(error, "response", {}) or {}
        self.status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        self.code = str((response.get("Error") or {}).get("Code") or "")
        super().__init__(self.status, self.code)
