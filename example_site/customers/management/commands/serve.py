"""``make serve``: migrate, seed, start the loopback fakes, then runserver in the same process.

The fake ESP and SMTP servers must live in the web server's process: the received-mail page
reads what they recorded. So runserver runs without its autoreloader (which would fork a child).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from example_site import fakes, seed
from example_site.customers.models import Client


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM ends the server like Ctrl-C does, so the fakes (and an embedded PostgreSQL this
    # process started) are stopped cleanly.
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the example site with the loopback fake ESP and SMTP servers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--addr", default="127.0.0.1")

    def handle(self, *args: Any, port: int, addr: str, **options: Any) -> None:
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
        self.stdout.write("Migrating the shared and tenant schemas ...")
        call_command("migrate_schemas", interactive=False, verbosity=0)
        servers = fakes.start()
        try:
            servers.apply_settings()
            seed.seed(servers, reset=False)
            username, password = seed.ensure_admin()
            self._banner(port, servers, username, password)
            call_command("runserver", f"{addr}:{port}", use_reloader=False, skip_checks=False)
        finally:
            fakes.stop()

    def _banner(self, port: int, servers: fakes.DemoServers, username: str, password: str) -> None:
        base = f"http://localhost:{port}"
        tenants = Client.objects.exclude(schema_name="public").order_by("schema_name")
        lines = [
            "",
            "tenantmail example site",
            f"  Platform (public site): {base}/",
            f"  Admin:                  {base}/admin/   login: {username} / {password}",
            f"  Received mail:          {base}/received/",
            "  Tenants (contact form):",
            *(
                f"    {t.name:<10} http://{t.schema_name}.localhost:{port}/contact/"
                f"   ({t.mail_backend or 'platform default'})"
                for t in tenants
            ),
            f"  Fake ESP:  {servers.esp.base_url}  (Mailgun, Postmark, SendGrid APIs)",
            f"  Fake SMTP: 127.0.0.1:{servers.tenant_smtp.port} (tenants' own SMTP, e.g. hooli), "
            f"127.0.0.1:{servers.ops_smtp.port} (platform relay for error mail)",
            "",
        ]
        self.stdout.write("\n".join(lines))
