"""Row 6's backend: Anymail's test backend, taking a Mailgun tenant's options."""

from __future__ import annotations

from typing import Any

from anymail.backends.test import EmailBackend as AnymailTestBackend
from django.core import mail


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

    def post_to_esp(self, payload: Any, message: Any) -> Any:
        response = super().post_to_esp(payload, message)
        # Keep nothing, as a real ESP client keeps nothing: Anymail's test backend appends every
        # message to mail.outbox. The floor row resends one object, so that list holds one
        # object many times; TenantBackend sends a copy each time, so it would hold thousands of
        # live messages by the end of a round and charge 6b for the garbage collector walking
        # them (seen: ~+15 us per message), which no real send pays.
        mail.outbox.pop()
        return response

    def get_esp_message_id(self, message: Any) -> int:
        # Anymail's is ``mail.outbox.index(message)``: a scan from the start. The floor row (6a)
        # resends one message object, found at index 0; TenantBackend sends a copy each time
        # (one send's defaults are never visible to another), appended last, so the scan would
        # grow with the round and charge 6b for list.index. The message was just appended.
        return len(mail.outbox) - 1
