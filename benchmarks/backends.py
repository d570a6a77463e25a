"""Row 6's backend: Anymail's test backend, taking a Mailgun tenant's options."""

from __future__ import annotations

from typing import Any

from anymail.backends.test import EmailBackend as AnymailTestBackend


class MailgunShapedTestBackend(AnymailTestBackend):  # type: ignore[misc]
    """Anymail's test backend (no network) that accepts, and ignores, Mailgun's options.

    Row 6 measures ``TenantBackend``'s own cost per message. That cost depends on the tenant's
    options (every send validates and fingerprints them), so the in-process tenant carries the
    same options as the Mailgun tenants of rows 3-5 -- ``api_key``, ``sender_domain``,
    ``api_url`` -- which Anymail's test backend alone would reject as unknown.
    """

    def __init__(
        self, *args: Any, api_key: str, sender_domain: str, api_url: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.api_key, self.sender_domain, self.api_url = api_key, sender_domain, api_url
