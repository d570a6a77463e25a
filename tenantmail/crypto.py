"""The key ring that encrypts tenants' mail options at rest.

``TENANTMAIL["ENCRYPTION_KEYS"]`` is a list of Fernet keys, newest first: the first encrypts, all
of them decrypt (:class:`~cryptography.fernet.MultiFernet`), so a key is rotated by prepending a
new one, running ``manage.py tenantmail_reencrypt``, then dropping the old one. When the list is
empty, keys are derived from ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``, so Django's own
secret-key rotation rotates these too.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import WATCHED_SETTINGS, get_settings
from .exceptions import TenantMailConfigurationError
from .keygen import generate_key

__all__ = [
    "InvalidToken",
    "decrypt",
    "encrypt",
    "generate_key",
    "is_current",
    "key_ring",
    "rotate",
]

_HKDF_INFO = b"tenantmail.mail_options"


def _derive(secret: str) -> bytes:
    # HKDF rather than a bare hash: the derived key is domain-separated from every other use of
    # SECRET_KEY (sessions, signing), so leaking one never helps with the other.
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret.encode("utf-8")
    )
    return base64.urlsafe_b64encode(raw)


def fernets_from(keys: Sequence[str], start: int = 0) -> list[Fernet]:
    """Entries ``start``... of ``TENANTMAIL["ENCRYPTION_KEYS"]``; a malformed one raises, named
    by its position."""
    fernets = []
    for index, key in enumerate(keys, start):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the key: say which entry and how to make a good one.
            raise TenantMailConfigurationError(
                "is not a valid Fernet key (32 url-safe base64-encoded bytes). Generate one with "
                "`python -m tenantmail.keygen`.",
                setting=f'TENANTMAIL["ENCRYPTION_KEYS"][{index}]',
            ) from None
    return fernets


@cache
def _fernets() -> tuple[Fernet, ...]:
    fernets = fernets_from(get_settings().encryption_keys)
    if not fernets:
        # Django itself refuses to run with an empty SECRET_KEY, so there is always one.
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        fernets = [Fernet(_derive(secret)) for secret in secrets]
    return tuple(fernets)


@cache
def key_ring() -> MultiFernet:
    return MultiFernet(list(_fernets()))


def is_current(token: str) -> bool:
    """Is ``token`` encrypted under the newest key (the one :func:`encrypt` uses)?

    False for a token only an older key decrypts -- and for one no key decrypts.
    """
    try:
        _fernets()[0].decrypt(_token_bytes(token))
    except InvalidToken:
        return False
    return True


def encrypt(plaintext: bytes) -> str:
    return key_ring().encrypt(plaintext).decode("ascii")


def _token_bytes(token: str) -> bytes:
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        # Not a Fernet token at all (a legacy plaintext row, say): same answer as a wrong key.
        raise InvalidToken from None


def decrypt(token: str) -> bytes:
    """Decrypt with any key on the ring; raises :class:`InvalidToken` when none fits."""
    return key_ring().decrypt(_token_bytes(token))


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the newest key without exposing the plaintext to callers."""
    return key_ring().rotate(_token_bytes(token)).decode("ascii")


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in WATCHED_SETTINGS:
        _fernets.cache_clear()
        key_ring.cache_clear()
