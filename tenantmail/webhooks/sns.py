"""Amazon SNS message signature verification (which Anymail does not do).

As AWS documents it (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html):
the ``SigningCertURL`` must be an SNS host over HTTPS (``TENANTMAIL["WEBHOOKS"]
["SNS_CERT_URL_PATTERN"]``); the certificate is fetched over TLS verified against the system CAs
(or ``SNS_CA_BUNDLE``) -- that TLS chain is what makes the certificate Amazon's -- and the
message's canonical string must verify under its public key (SignatureVersion 1: SHA1,
2: SHA256). Certificates are cached per URL, so a burst of events fetches one once.

A valid signature proves the message came from *some* SNS topic, not the tenant's: the tenant's
basic-auth credential (and optionally ``topic_arns``) ties it to the tenant.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import requests
from anymail.exceptions import AnymailWebhookValidationFailure
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .conf import get_webhook_settings

_NOTIFICATION_FIELDS: Final = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_FIELDS: Final = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_HASHES: Final = {"1": hashes.SHA1, "2": hashes.SHA256}


class SNSSignatureError(AnymailWebhookValidationFailure):  # type: ignore[misc]
    """The SNS message is not signed by Amazon SNS (or cannot be checked)."""


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical "Name\\nvalue\\n" string SNS signs."""
    kind = message.get("Type")
    names = _NOTIFICATION_FIELDS if kind == "Notification" else _SUBSCRIPTION_FIELDS
    parts = []
    for name in names:
        if name in message and message[name] is not None:
            parts.append(f"{name}\n{message[name]}\n")
        elif name != "Subject":  # Subject is the only optional one
            raise SNSSignatureError(f"SNS message without {name}")
    return "".join(parts).encode("utf-8")


class CertificateCache:
    """SigningCertURL -> public key; bounded, thread-safe."""

    MAX_ENTRIES: Final = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self.fetches = 0  # read by tests and benchmarks

    def get(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                self._keys.move_to_end(url)
                return key
        key = self._fetch(url)
        with self._lock:
            self._keys[url] = key
            while len(self._keys) > self.MAX_ENTRIES:
                self._keys.popitem(last=False)
        return key

    def _fetch(self, url: str) -> rsa.RSAPublicKey:
        settings = get_webhook_settings()
        self.fetches += 1
        try:
            response = requests.get(
                url,
                timeout=settings.sns_cert_timeout,
                verify=settings.sns_ca_bundle,
                allow_redirects=False,
            )
            response.raise_for_status()
            certificate = x509.load_pem_x509_certificate(response.content)
        except (requests.RequestException, ValueError) as error:
            raise SNSSignatureError(
                f"could not fetch the SNS signing certificate ({type(error).__name__})"
            ) from error
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SNSSignatureError("the SNS signing certificate does not hold an RSA key")
        return key

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


certificates = CertificateCache()


def verify(message: Mapping[str, Any]) -> None:
    """Raise :class:`SNSSignatureError` unless Amazon SNS signed ``message``."""
    url = message.get("SigningCertURL") or message.get("SigningCertUrl")
    if not isinstance(url, str) or not get_webhook_settings().sns_cert_url_pattern.match(url):
        raise SNSSignatureError("SNS SigningCertURL is missing or not an Amazon SNS URL")
    hash_type = _HASHES.get(str(message.get("SignatureVersion")))
    if hash_type is None:
        raise SNSSignatureError("unsupported SNS SignatureVersion")
    try:
        signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
    except (binascii.Error, ValueError) as error:
        raise SNSSignatureError("SNS Signature is not base64") from error
    data = string_to_sign(message)
    key = certificates.get(url)
    try:
        key.verify(signature, data, padding.PKCS1v15(), hash_type())
    except InvalidSignature as error:
        raise SNSSignatureError("SNS message signature does not verify") from error
