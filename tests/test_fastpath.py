"""The per-thread shortcut (tenantmail/fastpath.py) repeats the general path's answer only while
nothing it depended on changed: each test here changes one thing and checks that it misses.

Each send goes through the connection's tenant, as a request through django-tenants' middleware.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connection, connections

from tenantmail import fastpath, sending_as
from tenantmail.backends import TenantBackend
from tenantmail.config import MailConfig
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, Tenants
from tests.tenants_app.models import Client

NEW_KEY = "key-acme-new-999999999999999"


@pytest.fixture(autouse=True)
def _no_shortcut() -> Iterator[None]:
    fastpath.forget()
    yield
    fastpath.forget()


def send(backend: TenantBackend | None = None) -> None:
    message = EmailMessage("s", "b", "from@acme.example", ["to@example.com"])
    assert (backend or TenantBackend()).send_messages([message]) == 1


def warm(tenant: Client) -> MailConfig:
    """Send twice as ``tenant`` (resolve, then memo hit) and return the shortcut's config."""
    connection.set_tenant(tenant)
    send()
    send()
    config = fastpath.lookup()
    assert config is not None
    return config


def test_the_shortcut_repeats_the_general_paths_config(tenants: Tenants) -> None:
    config = warm(tenants.acme)
    assert config is TenantBackend().resolve()
    assert config.tenant == "acme"
    assert config.options["api_key"] == ACME_KEY


def test_an_in_place_edit_of_the_options_misses(tenants: Tenants, fake_esp: FakeESP) -> None:
    warm(tenants.acme)
    tenants.acme.mail_options["api_key"] = NEW_KEY  # same dict object, unsaved
    assert fastpath.lookup() is None
    send()
    assert fake_esp.messages[-1].credential == NEW_KEY


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mail_backend", "postmark"),
        ("mail_defaults", {"from_email": "other@acme.example"}),
        ("mail_subaccount", "acme-sub"),
    ],
)
def test_an_in_place_edit_of_any_mail_field_misses(
    tenants: Tenants, field: str, value: Any
) -> None:
    warm(tenants.acme)
    setattr(tenants.acme, field, value)
    assert fastpath.lookup() is None


def test_an_in_place_rename_misses(tenants: Tenants) -> None:
    warm(tenants.acme)
    tenants.acme.schema_name = "acme2"
    assert fastpath.lookup() is None
    assert TenantBackend().resolve().tenant == "acme2"


def test_a_deleted_instance_misses(tenants: Tenants) -> None:
    warm(tenants.acme)
    tenants.acme.pk = None  # what Model.delete() leaves behind
    assert fastpath.lookup() is None


def test_a_settings_change_misses(tenants: Tenants, settings: Any) -> None:
    warm(tenants.acme)
    settings.TENANTMAIL = {**settings.TENANTMAIL, "METADATA_KEY": "t"}
    assert fastpath.lookup() is None


def test_a_tenant_save_or_queryset_update_misses(tenants: Tenants) -> None:
    warm(tenants.acme)
    connection.set_schema_to_public()  # where django-tenants lets a tenant row be saved
    tenants.globex.save()  # any tenant: the tenant cache counts every invalidation
    connection.set_tenant(tenants.acme)
    assert fastpath.lookup() is None
    warm(tenants.acme)
    Client.objects.filter(pk=tenants.globex.pk).update(name="Globex 2")
    assert fastpath.lookup() is None


def test_another_instance_of_the_same_tenant_misses(tenants: Tenants) -> None:
    warm(tenants.acme)
    connection.set_tenant(Client.objects.get(pk=tenants.acme.pk))  # equal, not the same object
    assert fastpath.lookup() is None


def test_a_patched_get_mail_config_misses(tenants: Tenants, monkeypatch: Any) -> None:
    warm(tenants.acme)
    monkeypatch.setattr(Client, "get_mail_config", lambda self: None)
    assert fastpath.lookup() is None


def test_sending_as_bypasses_the_shortcut(tenants: Tenants) -> None:
    warm(tenants.acme)
    with sending_as(tenants.globex):
        assert fastpath.lookup() is None
        assert TenantBackend().resolve().tenant == "globex"


def test_explicit_tenant_and_overrides_bypass_the_shortcut(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    warm(tenants.acme)
    send(TenantBackend(tenant=tenants.globex))
    assert fake_esp.messages[-1].esp == "postmark"
    send(TenantBackend(api_key=NEW_KEY))
    assert fake_esp.messages[-1].credential == NEW_KEY


def test_the_shortcut_belongs_to_its_thread(tenants: Tenants) -> None:
    warm(tenants.acme)
    seen: list[object] = []

    def other() -> None:
        connections["default"].tenant = tenants.acme  # the same instance, another thread
        seen.append(fastpath.lookup())
        connections["default"].close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [None]


def test_connection_tenant_matches_djangos_lookup(tenants: Tenants) -> None:
    connection.set_tenant(tenants.acme)
    assert fastpath.connection_tenant("default") is tenants.acme

    async def in_a_loop() -> tuple[object, object]:  # asgiref's context storage: Django's lookup
        return fastpath.connection_tenant("default"), connections["default"].tenant

    ours, djangos = asyncio.run(in_a_loop())
    assert ours is djangos
    assert ours is not tenants.acme


def test_a_field_deferred_since_misses(tenants: Tenants) -> None:
    warm(tenants.acme)
    del tenants.acme.mail_options  # unloaded, as .defer() leaves it: the general path loads it
    assert fastpath.lookup() is None


def test_connection_tenant_in_a_thread_without_a_connection_yet() -> None:
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(fastpath.connection_tenant("default")))
    thread.start()
    thread.join()
    assert len(seen) == 1  # Django's lookup made this thread's connection: whatever its tenant
    assert seen[0] is None or getattr(seen[0], "schema_name", None) == "public"
