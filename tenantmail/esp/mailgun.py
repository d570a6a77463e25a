"""Mailgun sub-accounts: the parent's API key plus the ``X-Mailgun-On-Behalf-Of`` request header.

Mailgun documents sending for a subaccount with the primary account's key and the
``X-Mailgun-On-Behalf-Of: <subaccount id>`` HTTP request header (Mailgun API reference,
"Subaccounts"). It is a header of the API request, not of the message: it goes on the
``requests`` session, which belongs to one backend instance, which the pool keys by tenant and
fingerprint -- so no other tenant's request ever carries it.
"""

from __future__ import annotations

from typing import Any

import requests
from anymail.backends.mailgun import EmailBackend as _MailgunBackend
from anymail.exceptions import AnymailConfigurationError

ON_BEHALF_OF_HEADER = "X-Mailgun-On-Behalf-Of"


class MailgunSubaccountBackend(_MailgunBackend):  # type: ignore[misc]  # Anymail is untyped
    """Anymail's Mailgun backend, sending on behalf of the sub-account ``subaccount_id``."""

    #: Which ``TENANTMAIL["SUBACCOUNTS"]`` entry holds the parent credential, and which option
    #: carries the tenant's identifier (read by :mod:`tenantmail.subaccounts`).
    subaccount_esp = "mailgun"
    subaccount_option = "subaccount_id"

    def __init__(self, *, subaccount_id: str = "", **kwargs: Any) -> None:
        if not subaccount_id:
            raise AnymailConfigurationError(
                "MailgunSubaccountBackend needs subaccount_id (the tenant's mail_subaccount)"
            )
        self.subaccount_id = subaccount_id
        super().__init__(**kwargs)

    def create_session(self) -> requests.Session:
        session: requests.Session = super().create_session()
        session.headers[ON_BEHALF_OF_HEADER] = self.subaccount_id
        return session
