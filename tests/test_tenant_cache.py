"""The in-process tenant cache never outlives a change made in this process (issue 8, item 7).

The cache maps a schema name to the tenant row for ``TENANT_CACHE_SECONDS``. A rename, a
``QuerySet.update()``/``bulk_update()`` (no ``post_save``), and a save whose transaction another
thread raced (it cached the still-committed old row) each used to leave a stale entry behind.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connections, transaction
from django_tenants.utils import schema_context, schema_rename

from tenantmail import mailer
from tenantmail.exceptions import UnknownTenantError
from tenantmail.tenancy import TenantCache, tenant_cache
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, Tenants, acme_options
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

NEW_KEY = "key-acme-new-555555555555555"


def send(tenant: str, subject: str = "hello") -> None:
    mailer(tenant=tenant).send_messages([EmailMessage(subject, "body", to=["x@example.com"])])


def credentials(fake_esp: FakeESP, n: int) -> dict[str, str]:
    return {m.subject: m.credential for m in fake_esp.wait_for(n)}


def test_renamed_tenants_old_name_is_forgotten(tenants: Tenants, fake_esp: FakeESP) -> None:
    send("acme", "before the rename")  # caches "acme"
    schema_rename(tenants.acme, "acme_renamed")
    with pytest.raises(UnknownTenantError, match="'acme'"):
        send("acme", "old name")
    with schema_context("acme_renamed"):
        send("acme_renamed", "new name")
    assert credentials(fake_esp, 2) == {"before the rename": ACME_KEY, "new name": ACME_KEY}


def test_queryset_update_is_seen_by_the_next_send(tenants: Tenants, fake_esp: FakeESP) -> None:
    send("acme", "before")
    rows = Client.objects.filter(pk=tenants.acme.pk).update(
        mail_options=acme_options(fake_esp, api_key=NEW_KEY)
    )
    assert rows == 1
    send("acme", "after")
    assert credentials(fake_esp, 2) == {"before": ACME_KEY, "after": NEW_KEY}


def test_queryset_update_of_the_schema_name(tenants: Tenants, fake_esp: FakeESP) -> None:
    send("acme", "before")
    Client.objects.filter(pk=tenants.acme.pk).update(schema_name="acme_moved")
    with pytest.raises(UnknownTenantError):
        send("acme", "old name")


def test_bulk_update_is_seen_by_the_next_send(tenants: Tenants, fake_esp: FakeESP) -> None:
    send("acme", "before")
    tenants.acme.mail_options = acme_options(fake_esp, api_key=NEW_KEY)
    Client.objects.bulk_update([tenants.acme], ["mail_options"])
    send("acme", "after")
    assert credentials(fake_esp, 2) == {"before": ACME_KEY, "after": NEW_KEY}


def test_save_in_a_transaction_raced_by_another_thread(
    tenants: Tenants, fake_esp: FakeESP, django_capture_on_commit_callbacks: Any
) -> None:
    def other_thread() -> None:
        try:
            # Sees the committed row (the old key) and caches it, after our post_save cleared
            # the cache but before our commit.
            send("acme", "raced, before the commit")
        finally:
            connections.close_all()

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        tenants.acme.mail_options = acme_options(fake_esp, api_key=NEW_KEY)
        tenants.acme.save()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(10)
    send("acme", "after the commit")
    assert credentials(fake_esp, 2) == {
        "raced, before the commit": ACME_KEY,
        "after the commit": NEW_KEY,
    }


def test_cache_entries_are_indexed_by_primary_key(tenants: Tenants) -> None:
    tenant_cache.get("acme")
    tenant_cache.get("globex")
    tenant_cache.get("no_such_tenant")  # cached as "no such tenant": no pk
    assert tenant_cache.invalidate_pk(tenants.acme.pk) == ["acme"]
    assert tenant_cache.invalidate_pk(tenants.acme.pk) == []
    tenant_cache.invalidate("globex")
    tenant_cache.invalidate("no_such_tenant")
    assert tenant_cache.invalidate_pk(tenants.globex.pk) == []


def test_a_lookup_overtaken_by_an_invalidation_is_not_cached(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    """Another thread's read of the old row finishes *after* the change was invalidated (and
    committed): what it read must not be kept for TENANT_CACHE_SECONDS."""
    read, go_on = threading.Event(), threading.Event()

    class SlowDatabase(TenantCache):
        def _fetch(self, schema_name: str) -> Any:
            instance = super()._fetch(schema_name)  # the real query: the old row
            read.set()
            go_on.wait(10)  # ... and a slow network back
            return instance

    cache = SlowDatabase()

    def other_thread() -> None:
        try:
            cache.get("acme")
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert read.wait(10)
    cache.invalidate("acme")  # post_save / on_commit of a change, meanwhile
    go_on.set()
    thread.join(10)
    queries = cache.queries
    cache.get("acme")
    assert cache.queries == queries + 1  # looked up again, not served from the cache


def test_bulk_create_is_seen_by_the_next_send(tenants: Tenants, fake_esp: FakeESP) -> None:
    with pytest.raises(UnknownTenantError):
        send("newco", "before")  # cached as "no such tenant"
    Client.objects.bulk_create(
        [
            Client(
                schema_name="newco",
                name="Newco",
                mail_backend="mailgun",
                mail_options=acme_options(fake_esp, api_key=NEW_KEY),
            )
        ]
    )
    send("newco", "after")
    assert credentials(fake_esp, 1) == {"after": NEW_KEY}
