"""`make demo`, part 2: delivery events flow back to the tenant whose mail it was.

Each ESP tenant (acme on its own Mailgun account, globex on its own Postmark server, initech on
the platform's Mailgun account) sends one message to a reader and to an old address. The fake ESP
side then posts, for each message the fake ESP received, a "delivered" event for the reader and a
"bounced" event for the old address to *that tenant's* tracking URL -- signed with the tenant's
own webhook key (Mailgun HMAC, Postmark basic auth; initech's with the platform's key) -- through
the example site's public urlconf and django-tenants' routing. The table shows each event as
``tenantmail.signals.tracking`` delivered it; then acme sends to both old addresses with
``TENANTMAIL["SUPPRESSION"] = "drop"``: only acme's own bounced address is dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.core.mail import EmailMessage
from django.test import Client as HttpClient
from django.test.utils import override_settings
from django_tenants.utils import tenant_context

from example_site.customers.models import Client
from example_site.fakes import DemoServers
from tenantmail import mailer, signals
from tenantmail.masking import mask
from tenantmail.models import Suppression
from tenantmail.testing import ReceivedMessage
from tenantmail.webhooks import tracking_url
from tenantmail.webhooks.testing import mailgun_post, postmark_post

PLATFORM_SIGNING_KEY = "platform-mailgun-signing-demo-4c1e"
#: Per tenant: (ESP, its webhook secrets) -- what an operator pastes from the ESP's dashboard.
WEBHOOK_SECRETS: dict[str, dict[str, Any]] = {
    "acme": {"mailgun": {"webhook_signing_key": "acme-mailgun-signing-demo-9f2b"}},
    "globex": {"postmark": {"webhook_secret": "globex:postmark-hook-demo-1d7e"}},
}
ESP_OF = {"acme": "mailgun", "globex": "postmark", "initech": "mailgun"}


@dataclass(frozen=True)
class EventRow:
    url: str
    esp: str
    event: str
    recipient: str
    attributed_to: str
    schema: str


def _signed(schema: str, event: str, message: ReceivedMessage, recipient: str) -> Any:
    if ESP_OF[schema] == "postmark":
        record = "Delivery" if event == "delivered" else "Bounce"
        credential = WEBHOOK_SECRETS[schema]["postmark"]["webhook_secret"]
        return postmark_post(
            credential,
            record=record,
            recipient=recipient,
            message_id=message.message_id,
            metadata=message.metadata,
        )
    key = (
        WEBHOOK_SECRETS.get(schema, {})
        .get("mailgun", {})
        .get("webhook_signing_key", PLATFORM_SIGNING_KEY)
    )
    return mailgun_post(
        key,
        event="delivered" if event == "delivered" else "failed",
        recipient=recipient,
        message_id=message.message_id.strip("<>"),
        metadata=message.metadata,
    )


def run(servers: DemoServers, run_id: str) -> int:
    """Print the events table and the suppression check; 0 if every event landed right."""
    print("\nDelivery events back from the ESPs (tenantmail.webhooks)\n")
    for schema, secrets in WEBHOOK_SECRETS.items():
        tenant = Client.objects.get(schema_name=schema)
        tenant.mail_webhook_secrets = secrets
        tenant.save()
    Suppression.objects.filter(tenant_schema__in=ESP_OF).delete()

    received: list[tuple[str | None, Any, str]] = []

    def on_event(sender: Any, tenant: str | None, event: Any, esp_name: str, **kw: Any) -> None:
        from django.db import connection

        received.append((tenant, event, connection.schema_name))

    signals.tracking.connect(on_event, dispatch_uid="demo-webhooks")
    anymail = {"ANYMAIL": {**_anymail(), "MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING_KEY}}
    rows: list[EventRow] = []
    failures = 0
    try:
        with override_settings(**anymail):
            servers.esp.clear()
            for schema in ESP_OF:
                tenant = Client.objects.get(schema_name=schema)
                with tenant_context(tenant):
                    EmailMessage(
                        f"Events demo from {tenant.name} ({run_id})",
                        "Hello!",
                        to=["reader@example.com", f"old-{schema}@example.com"],
                    ).send()
            deadline = time.monotonic() + 10
            while len(servers.esp.messages) < len(ESP_OF) and time.monotonic() < deadline:
                time.sleep(0.02)
            client = HttpClient()
            for message in servers.esp.messages:
                schema = message.metadata.get("tenant", "")
                for event, recipient in (
                    ("delivered", "reader@example.com"),
                    ("bounced", f"old-{schema}@example.com"),
                ):
                    body, content_type, headers = _signed(schema, event, message, recipient)
                    url = tracking_url(schema, ESP_OF[schema])
                    before = len(received)
                    response = client.post(
                        url, data=body, content_type=content_type, HTTP_HOST="localhost", **headers
                    )
                    got = received[before:]
                    ok = response.status_code == 200 and [t for t, _e, _s in got] == [schema]
                    failures += not ok
                    rows.append(
                        EventRow(
                            url,
                            ESP_OF[schema],
                            got[0][1].event_type if got else f"HTTP {response.status_code}",
                            recipient,
                            got[0][0] if got else "(nothing dispatched)",
                            got[0][2] if got else "-",
                        )
                    )
            # A forged event: initech's URL, signed with acme's key -> refused, nothing dispatched.
            forged = mailgun_post(
                WEBHOOK_SECRETS["acme"]["mailgun"]["webhook_signing_key"],
                metadata={"tenant": "acme"},
            )
            body, content_type, headers = forged
            response = client.post(
                tracking_url("initech", "mailgun"),
                data=body,
                content_type=content_type,
                HTTP_HOST="localhost",
                **headers,
            )
            failures += response.status_code != 400
            rows.append(
                EventRow(
                    tracking_url("initech", "mailgun"),
                    "mailgun",
                    f"forged (acme's key): HTTP {response.status_code}",
                    "-",
                    "(nothing dispatched)",
                    "-",
                )
            )
    finally:
        signals.tracking.disconnect(dispatch_uid="demo-webhooks")

    _table(
        ("tenant URL", "ESP", "event", "recipient", "attributed to", "receiver's schema"),
        [(r.url, r.esp, r.event, r.recipient, r.attributed_to, r.schema) for r in rows],
    )
    entries = list(
        Suppression.objects.filter(tenant_schema__in=ESP_OF).values_list(
            "tenant_schema", "address", "reason"
        )
    )
    print()
    _table(("tenant", "suppressed address", "reason"), entries)
    expected = sorted((s, f"old-{s}@example.com", "bounced") for s in ESP_OF)
    failures += sorted(entries) != expected

    # The effect on acme's next send: its own bounced address is dropped, globex's is not.
    with override_settings(**anymail):
        from django.conf import settings

        servers.esp.clear()
        mode = {"TENANTMAIL": {**settings.TENANTMAIL, "SUPPRESSION": "drop"}}
        with override_settings(**mode):
            message = EmailMessage(
                f"After the bounces ({run_id})",
                "Hello again",
                to=["old-acme@example.com", "old-globex@example.com"],
            )
            mailer(tenant="acme").send_messages([message])
        deadline = time.monotonic() + 10
        while not servers.esp.messages and time.monotonic() < deadline:
            time.sleep(0.02)
    got_to = servers.esp.messages[0].to if servers.esp.messages else []
    dropped = getattr(message, "tenantmail_suppressed", [])
    print(
        f"\nacme sends to old-acme@ and old-globex@ (SUPPRESSION=drop): the ESP received "
        f"{got_to}; dropped {dropped} (on acme's list only)."
    )
    failures += got_to != ["old-globex@example.com"] or dropped != ["old-acme@example.com"]
    print(
        "Webhook keys used: "
        + ", ".join(
            f"{s}: {mask(next(iter(next(iter(v.values())).values())))}"
            for s, v in WEBHOOK_SECRETS.items()
        )
        + f", initech (platform account): {mask(PLATFORM_SIGNING_KEY)}"
    )
    good = len(rows) + 2 - failures
    print(f"{good} of {len(rows) + 2} webhook checks passed.")
    return 1 if failures else 0


def _anymail() -> dict[str, Any]:
    from django.conf import settings

    return dict(getattr(settings, "ANYMAIL", {}))


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
