"""What an ESP module hands back: the identifier, and the issued key if the ESP issues one."""

from __future__ import annotations

from typing import NamedTuple


class Outcome(NamedTuple):
    #: The ESP's id of what was found or created ("" in a dry run that would create it).
    subaccount: str
    #: A key issued for the tenant (Postmark server token, Brevo sub-account key), else None.
    secret: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"Outcome(subaccount={self.subaccount!r}, secret={'…' if self.secret else None})"
