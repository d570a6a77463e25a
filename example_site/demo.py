"""`make demo`: tenants send through their own credentials to loopback fake servers.

Starts (or reuses) an embedded PostgreSQL, migrates the shared and tenant schemas, seeds tenants
-- acme on a Mailgun sub-account key, globex on a Postmark server token, hooli on its own SMTP
server, initech with no config (platform fallback) -- and sends one message per tenant from
inside that tenant's context, one per-send override, and one error mail raised during acme's
request (which must leave through the platform's SMTP relay, not acme's account), and queued mail:
one request per tenant enqueues a message and a real ``db_worker`` delivers them. Then prints
what the servers actually received and exits non-zero if any message arrived with a credential
other than the one expected for it; last, ``tenantmail_verify --all`` verifies every tenant (and
fails the demo if one fails). umbrella (``seed.subaccount_seeds``) sends as a Mailgun
subaccount with the platform's parent key: the table shows it masked plus the on-behalf-of id.
stark is provisioned first (``tenantmail_provision stark --esp postmark``): the fake's Postmark
account API creates its server, and stark sends with the server token it issued.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import django

if TYPE_CHECKING:  # imported at run time only after django.setup()
    from example_site.customers.models import Client
    from example_site.fakes import DemoServers
    from example_site.mailbox import Row


@dataclass(frozen=True)
class Expected:
    label: str  # how the table names the send
    tenant: str  # the tenant the message must be attributed to ("(platform)" for platform mail)
    credential: str  # what the server must have received


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    django.setup()

    from django.core.mail import EmailMessage
    from django.core.management import call_command
    from django.test.utils import override_settings
    from django.utils.log import AdminEmailHandler
    from django_tenants.utils import tenant_context

    from example_site import fakes, mailbox, seed
    from example_site.customers.models import Client
    from tenantmail import mailer

    call_command("migrate_schemas", interactive=False, verbosity=0)
    servers = fakes.start()
    run = time.strftime("%H:%M:%S")
    expected: dict[str, Expected] = {}  # by subject: each send's subject is unique
    try:
        with override_settings(**servers.settings_patch()):
            # Tenants added in the admin (make serve) are left alone: the demo sends as the seeds.
            tenants = seed.seed(servers, reset=True)
            _provision(tenants)
            for tenant in tenants:
                subject = f"Welcome from {tenant.name} ({run})"
                with tenant_context(tenant):
                    # Plain Django: the default mailer is TenantBackend.
                    EmailMessage(subject, "Hello!", to=["customer@example.com"]).send()
                label = tenant.schema_name + ("" if tenant.mail_backend else " (fallback)")
                credential = seed.expected_credential(tenant.schema_name, servers)
                expected[subject] = Expected(label, tenant.schema_name, credential)

            # A per-send override: acme's context, but this message goes out with another key
            # (e.g. a transactional sub-account).
            override_key = "key-acme-transactional-91b2c3"
            subject = f"Receipt from Acme ({run}, override)"
            with tenant_context(Client.objects.get(schema_name="acme")):
                mailer(api_key=override_key).send_messages(
                    [EmailMessage(subject, "Thanks!", to=["buyer@example.com"])]
                )
            expected[subject] = Expected("acme (override)", "acme", override_key)

            # An error during acme's request: LOGGING's AdminEmailHandler mails ADMINS through
            # the "admin" mailer (the platform's SMTP relay, no login), never acme's account.
            subject = f"Demo error in acme's request ({run})"
            with tenant_context(Client.objects.get(schema_name="acme")):
                _log_error(subject, AdminEmailHandler)
            expected[f"[Django] ERROR: {subject}"] = Expected(
                "error mail during acme", "(platform)", ""
            )

            expected.update(_queue_demo(servers, run))

            _wait_for(servers, len(expected))
            rows = mailbox.rows(servers.received())
            status = _report(rows, expected)
            status |= _webhooks(servers, run)
            status |= _verify()
    finally:
        fakes.stop()
    return status


def _provision(tenants: list[Client]) -> None:
    """``manage.py tenantmail_provision`` for each tenant in ``seed.PROVISIONED``, against the
    fake ESP's account API; its (masked) output is printed before the table."""
    from django.core.management import call_command

    from example_site import seed

    for tenant in tenants:
        esp = seed.PROVISIONED.get(tenant.schema_name)
        if esp is not None:
            print(f"$ manage.py tenantmail_provision {tenant.schema_name} --esp {esp}")
            call_command("tenantmail_provision", tenant.schema_name, "--esp", esp)
            tenant.refresh_from_db()
    print()


def _webhooks(servers: DemoServers, run: str) -> int:
    """Delivery events back to each tenant (tenantmail.webhooks); see example_site.webhooks_demo."""
    from example_site import webhooks_demo

    return webhooks_demo.run(servers, run)


def _verify() -> int:
    """`manage.py tenantmail_verify --all`: every stage of every seeded tenant against the fakes
    (no --send-to here, so no test message is added to the table above)."""
    from django.core.management import CommandError, call_command

    print("\n$ python manage.py tenantmail_verify --all --force")
    try:
        # --force: the demo may run again within TENANTMAIL["VERIFY_INTERVAL"].
        call_command("tenantmail_verify", "--all", "--force")
    except CommandError as error:
        print(f"CommandError: {error}")
        return 1
    return 0


def _queue_demo(servers: DemoServers, run: str) -> dict[str, Expected]:
    """Queued sending: a request on each tenant's site enqueues mail; a db_worker delivers it."""
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client as Browser

    from example_site import seed
    from example_site.customers.models import Client

    expected = {}
    browser = Browser()
    tenants = Client.objects.filter(schema_name__in=seed.tenant_seeds(servers))
    for tenant in tenants.order_by("schema_name"):
        subject = f"Queued welcome from {tenant.name} ({run})"
        response = browser.post(
            "/queue-welcome/", {"subject": subject}, HTTP_HOST=f"{tenant.schema_name}.localhost"
        )
        if response.status_code != 200:
            raise RuntimeError(f"queueing for {tenant.schema_name} failed: {response.content!r}")
        label = f"{tenant.schema_name} (queued{'' if tenant.mail_backend else ', fallback'})"
        credential = seed.expected_credential(tenant.schema_name, servers)
        expected[subject] = Expected(label, tenant.schema_name, credential)
    connection.set_schema_to_public()
    # The same worker `manage.py db_worker` runs; --batch: deliver what is queued, then exit.
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)
    return expected


def _log_error(text: str, handler_class: type[logging.Handler]) -> None:
    """Emit through the LOGGING-configured AdminEmailHandler (not the console handler)."""
    logger = logging.getLogger("django.request")
    handler = next(h for h in logger.handlers if isinstance(h, handler_class))
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, text, (), None)
    handler.handle(record)


def _wait_for(servers: DemoServers, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while servers.count() < count and time.monotonic() < deadline:
        time.sleep(0.02)


def _report(rows: list[Row], expected: dict[str, Expected]) -> int:
    table = []
    failures = 0
    seen = set()
    for row in rows:
        want = expected.get(row.subject)
        seen.add(row.subject)
        ok = (
            want is not None
            and row.credential == want.credential
            and row.tenant == want.tenant
            and row.ok
        )
        failures += not ok
        backend = row.backend or f"{row.esp} (admin mailer)"
        if row.backend and not row.own_account:
            backend += " (platform account)"
        table.append(
            (
                want.label if want else f"unexpected: {row.tenant}",
                backend,
                row.server,
                row.credential_masked
                + (f" on behalf of {row.on_behalf_of}" if row.on_behalf_of else ""),
                row.message_id,
                "ok" if ok else "WRONG CREDENTIAL",
            )
        )
    missing = [e.label for subject, e in expected.items() if subject not in seen]
    header = ("tenant", "backend", "received by", "credential used", "message id", "status")
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    for line in [header, tuple("-" * w for w in widths), *table]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print()
    if missing:
        print(f"Never received: {', '.join(missing)}")
    good = len(table) - failures
    print(f"{good} of {len(expected)} messages arrived with the credential they should have used.")
    return 1 if failures or missing or len(table) != len(expected) else 0


if __name__ == "__main__":
    sys.exit(main())
