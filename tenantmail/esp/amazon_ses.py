"""Amazon SES v2 tenants: the parent's AWS identity plus ``TenantName`` on every send.

SES v2 ``SendEmail`` and ``SendBulkEmail`` take a ``TenantName`` parameter (Amazon SES API
reference, "Tenants"). The platform sets it from the tenant's ``mail_subaccount``; a tenant cannot
choose it: ``esp_extra`` in a sub-account tenant's ``mail_defaults`` is refused altogether
(:mod:`tenantmail.config`), and a message whose own ``esp_extra`` names a *different*
``TenantName`` is refused here rather than silently rewritten (the same name is harmless).
"""

from __future__ import annotations

from typing import Any

from anymail.backends.amazon_ses import EmailBackend as _SESBackend
from anymail.exceptions import AnymailConfigurationError


class AmazonSESTenantBackend(_SESBackend):  # type: ignore[misc]  # Anymail is untyped
    """Anymail's Amazon SES v2 backend, sending as the SES tenant ``tenant_name``."""

    subaccount_esp = "amazon_ses"
    subaccount_option = "tenant_name"

    def __init__(self, *, tenant_name: str = "", **kwargs: Any) -> None:
        if not tenant_name:
            raise AnymailConfigurationError(
                "AmazonSESTenantBackend needs tenant_name (the tenant's mail_subaccount)"
            )
        self.tenant_name = tenant_name
        super().__init__(**kwargs)

    def post_to_esp(self, payload: Any, message: Any) -> Any:
        # The payload is complete here (esp_extra already merged), so nothing can override this.
        given = payload.params.get("TenantName")
        if given is not None and given != self.tenant_name:
            raise AnymailConfigurationError(
                "esp_extra may not set TenantName: the SES tenant is set by the platform from "
                "the tenant's mail_subaccount"
            )
        payload.params["TenantName"] = self.tenant_name
        return super().post_to_esp(payload, message)
