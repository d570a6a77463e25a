"""Generate a key for ``TENANTMAIL["ENCRYPTION_KEYS"]``: ``python -m tenantmail.keygen``.

Deliberately settings-free (it imports neither Django's settings nor django-tenants, which reads
its settings at import time), so it runs in a plain shell before a project is configured.
:func:`tenantmail.crypto.generate_key` is the same function.
"""

from __future__ import annotations

from cryptography.fernet import Fernet

__all__ = ["generate_key", "main"]


def generate_key() -> str:
    """A new random Fernet key (32 url-safe base64-encoded bytes) as text."""
    return Fernet.generate_key().decode("ascii")


def main() -> None:
    print(generate_key())


if __name__ == "__main__":  # pragma: no cover  (run by tests/test_readme.py in a subprocess)
    main()
