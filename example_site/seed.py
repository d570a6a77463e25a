"""The demo's tenants, their domains and the admin user.

- acme: a Mailgun sub-account key
- globex: a Postmark server token
- hooli: its own SMTP server (the demo's ``tenant_smtp``)
- initech: no configuration -> the platform's account
- umbrella: a Mailgun subaccount of the platform's account (no secret stored; see
  ``subaccount_seeds``)
- stark: seeded with no mail settings, then provisioned by the demo (``tenantmail_provision stark
  --esp postmark``): a Postmark server created through the fake's account API, whose server token
  is stored encrypted (see ``PROVISIONED``)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from example_site.customers.models import Client, Domain
from example_site.embedded_pg import ROOT
from example_site.fakes import DemoServers
from tenantmail.conf import BACKEND_ALIASES

ADMIN_USERNAME = "admin"
_PASSWORD_FILE = ROOT / ".pgdata" / "example-admin-password"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def tenant_seeds(servers: DemoServers) -> dict[str, dict[str, Any]]:
    """Each seeded tenant's fields. ESP API URLs come from ANYMAIL (pointed at the fake ESP)."""
    return {
        "acme": {
            "name": "Acme",
            "mail_backend": "mailgun",
            "mail_options": {
                "api_key": "key-acme-subaccount-7f3a9c1e5b",
                "sender_domain": "mg.acme.example",
            },
            "mail_defaults": {"from_email": "hello@acme.example"},
        },
        "globex": {
            "name": "Globex",
            "mail_backend": "postmark",
            "mail_options": {"server_token": "pm-globex-server-2d8e4b6a0c"},
            "mail_defaults": {"from_email": "support@globex.example"},
        },
        "hooli": {
            "name": "Hooli",
            "mail_backend": "smtp",
            "mail_options": {
                "host": servers.tenant_smtp.host,
                "port": servers.tenant_smtp.port,
                "username": "hooli",
                "password": "hooli-smtp-5c1d9e7f3a",
                "timeout": 5,
            },
            "mail_defaults": {"from_email": "hello@hooli.example"},
        },
        "initech": {"name": "Initech", "mail_backend": "", "mail_options": {}, "mail_defaults": {}},
        **subaccount_seeds(),
        # Provisioned by the demo (PROVISIONED) right after seeding.
        "stark": {
            "name": "Stark",
            "mail_backend": "",
            "mail_options": {},
            "mail_subaccount": "",
            "mail_defaults": {"from_email": "hello@stark.example"},
        },
    }


#: Tenants the demo provisions with ``manage.py tenantmail_provision <schema> --esp <esp>``.
PROVISIONED = {"stark": "postmark"}


def subaccount_seeds() -> dict[str, dict[str, Any]]:
    """Tenants in sub-account mode: the operator sets the id; the parent key is in settings."""
    return {
        "umbrella": {
            "name": "Umbrella",
            "mail_backend": "mailgun_subaccount",
            "mail_options": {},
            "mail_subaccount": "sa-umbrella-5e0c1b",
            "mail_defaults": {"from_email": "hello@umbrella.example"},
        },
    }


def expected_credential(schema: str, servers: DemoServers) -> str:
    """What the receiving server should record for a message sent as ``schema``."""
    if schema in PROVISIONED:
        return issued_token(schema, servers)
    seed = tenant_seeds(servers)[schema]
    options = seed["mail_options"]
    if seed["mail_backend"] == "smtp":
        return f"{options['username']}:{options['password']}"
    if not seed["mail_backend"]:
        return str(settings.PLATFORM_MAILGUN["api_key"])
    if seed["mail_backend"] == "mailgun_subaccount":
        return str(settings.PARENT_MAILGUN["api_key"])
    return str(options.get("api_key") or options.get("server_token"))


def issued_token(schema: str, servers: DemoServers) -> str:
    """The server token the fake Postmark account issued for ``schema``'s server."""
    from tenantmail.testing_provisioning import accounts

    servers_by_name = {s["Name"]: s for s in accounts(servers.esp).postmark.values()}
    server = servers_by_name.get(schema)
    return str(server["ApiTokens"][0]) if server else "(not provisioned in this run)"


def seed(servers: DemoServers, *, reset: bool) -> list[Client]:
    """Create the public tenant and the seeded tenants with their ``<schema>.localhost`` domains.

    ``reset=True`` (the demo) puts every seeded tenant back to its seed values. Otherwise (the
    site) existing tenants keep what an operator set in the admin; only SMTP tenants on a
    loopback host are pointed at this run's SMTP server, whose port changes on every start.
    """
    connection.set_schema_to_public()
    public, _ = Client.objects.get_or_create(schema_name="public", defaults={"name": "Platform"})
    Domain.objects.get_or_create(domain="localhost", defaults={"tenant": public})
    tenants = []
    for schema, fields in tenant_seeds(servers).items():
        tenant = Client.objects.filter(schema_name=schema).first()
        if tenant is None or reset:
            tenant = tenant or Client(schema_name=schema)
            for name, value in fields.items():
                setattr(tenant, name, value)
            # The seed sets secret and endpoint together (hooli's SMTP port changes every run).
            tenant.confirm_mail_endpoint_change()
            tenant.save(verbosity=0)
        Domain.objects.get_or_create(domain=f"{schema}.localhost", defaults={"tenant": tenant})
        tenants.append(tenant)
    repoint_smtp_tenants(servers)
    return tenants


def repoint_smtp_tenants(servers: DemoServers) -> None:
    for tenant in Client.objects.filter(mail_backend__in=["smtp", BACKEND_ALIASES["smtp"]]):
        options = tenant.mail_options
        if not isinstance(options, dict) or options.get("host") not in LOOPBACK_HOSTS:
            continue  # undecryptable, or a real server: leave it alone
        if options.get("port") != servers.tenant_smtp.port:
            tenant.mail_options = {**options, "port": servers.tenant_smtp.port}
            tenant.save(verbosity=0)


def admin_password() -> str:
    """From $EXAMPLE_ADMIN_PASSWORD, else generated once and kept next to the demo database."""
    from_env = os.environ.get("EXAMPLE_ADMIN_PASSWORD")
    if from_env:
        return from_env
    path = Path(_PASSWORD_FILE)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(exist_ok=True)
    password = secrets.token_urlsafe(12)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


def ensure_admin() -> tuple[str, str]:
    """The superuser of the public admin, with a known password. Returns (username, password)."""
    from django.contrib.auth import get_user_model

    connection.set_schema_to_public()
    password = admin_password()
    user_model = get_user_model()
    user = user_model.objects.filter(username=ADMIN_USERNAME).first()
    if user is None:
        user_model.objects.create_superuser(ADMIN_USERNAME, "admin@saas.example", password)
    elif not user.check_password(password) or not user.is_superuser:
        user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
    return ADMIN_USERNAME, password
