"""The demo's far side of the network: a loopback fake ESP and two real SMTP servers.

- ``esp``: Mailgun, Postmark and SendGrid APIs (``tenantmail.testing.FakeESP``);
- ``tenant_smtp``: stands in for a tenant's own SMTP server (hooli is seeded on it);
- ``ops_smtp``: the platform's SMTP relay, where the ``admin`` mailer sends error mail.

They run inside the process that sends (``make demo``) or serves (``make serve``), so the
received-mail page can read what they recorded. Ports change on every start; ``settings_patch()``
points Anymail's API URLs and the admin mailer at them.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from tenantmail.testing import FakeESP, FakeSMTP, ReceivedMessage


@dataclass(frozen=True)
class Received:
    """One recorded message and which of the fake servers got it."""

    server: str  # "mailgun API", "postmark API", "tenant SMTP server", "platform SMTP relay"
    message: ReceivedMessage


@dataclass
class DemoServers:
    esp: FakeESP
    tenant_smtp: FakeSMTP
    ops_smtp: FakeSMTP

    def stop(self) -> None:
        for server in (self.esp, self.tenant_smtp, self.ops_smtp):
            server.stop()

    def settings_patch(self) -> dict[str, Any]:
        """Settings (for ``override_settings``) that route all platform mail to the fakes."""
        patch: dict[str, Any] = {
            "ANYMAIL": {
                **getattr(settings, "ANYMAIL", {}),
                "MAILGUN_API_URL": self.esp.mailgun_api_url,
                "POSTMARK_API_URL": self.esp.postmark_api_url,
                "SENDGRID_API_URL": self.esp.sendgrid_api_url,
            }
        }
        provisioning = getattr(settings, "TENANTMAIL", {}).get("PROVISIONING", {})
        if "postmark" in provisioning:  # the Postmark account API: the same fake
            postmark = {**provisioning["postmark"], "api_url": self.esp.postmark_api_url}
            patch["TENANTMAIL"] = {
                **settings.TENANTMAIL,
                "PROVISIONING": {**provisioning, "postmark": postmark},
            }
        relay = {"host": self.ops_smtp.host, "port": self.ops_smtp.port}
        if hasattr(settings, "MAILERS"):
            mailers = copy.deepcopy(settings.MAILERS)
            mailers["admin"]["OPTIONS"] = {**mailers["admin"].get("OPTIONS", {}), **relay}
            patch["MAILERS"] = mailers
        else:
            patch.update(EMAIL_HOST=relay["host"], EMAIL_PORT=relay["port"])
        return patch

    def apply_settings(self) -> None:
        """Apply :meth:`settings_patch` for the rest of the process (``make serve``)."""
        for name, value in self.settings_patch().items():
            setattr(settings, name, value)
            setting_changed.send(sender=type(self), setting=name, value=value, enter=True)

    def received(self) -> list[Received]:
        """Everything the three servers accepted, oldest first."""
        out = [Received(f"{m.esp} API", m) for m in self.esp.messages]
        out += [Received("tenant SMTP server", m) for m in self.tenant_smtp.messages]
        out += [Received("platform SMTP relay", m) for m in self.ops_smtp.messages]
        return sorted(out, key=lambda r: r.message.received_at)

    def count(self) -> int:
        return len(self.esp.messages) + len(self.tenant_smtp.messages) + len(self.ops_smtp.messages)


_lock = threading.Lock()
_current: DemoServers | None = None


def start() -> DemoServers:
    """Start the fakes (once per process) and return them."""
    global _current
    with _lock:
        if _current is None:
            servers = DemoServers(FakeESP(), FakeSMTP(), FakeSMTP())
            servers.esp.start()
            servers.tenant_smtp.start()
            servers.ops_smtp.start()
            _current = servers
        return _current


def current() -> DemoServers | None:
    """The running fakes, or None (e.g. under a plain ``runserver``)."""
    return _current


def stop() -> None:
    global _current
    with _lock:
        servers, _current = _current, None
    if servers is not None:
        servers.stop()
