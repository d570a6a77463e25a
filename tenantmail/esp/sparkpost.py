"""SparkPost sub-accounts: the parent's API key plus Anymail's ``subaccount`` option.

Anymail sends the option as SparkPost's ``X-MSYS-SUBACCOUNT`` request header (SparkPost API
reference, "Subaccounts": "send on behalf of a subaccount using a master account API key").
"""

from __future__ import annotations

from typing import Any

from anymail.backends.sparkpost import EmailBackend as _SparkPostBackend
from anymail.exceptions import AnymailConfigurationError


class SparkPostSubaccountBackend(_SparkPostBackend):  # type: ignore[misc]  # Anymail is untyped
    """Anymail's SparkPost backend with a mandatory ``subaccount``."""

    subaccount_esp = "sparkpost"
    subaccount_option = "subaccount"

    def __init__(self, *, subaccount: str = "", **kwargs: Any) -> None:
        if not subaccount:
            raise AnymailConfigurationError(
                "SparkPostSubaccountBackend needs subaccount (the tenant's mail_subaccount)"
            )
        # A string: requests refuses non-string header values, and SparkPost reads the id from it.
        super().__init__(subaccount=str(subaccount), **kwargs)
