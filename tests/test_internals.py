"""Edges of the machinery that the end-to-end tests rarely reach."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db.models.signals import post_save

from tenantmail import mailer
from tenantmail import pool as pool_module
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.fields import EncryptedJSONField, UndecryptableOptions
from tenantmail.invalidation import tenant_changed
from tenantmail.masking import SecretDict
from tenantmail.pool import Connection, ConnectionPool
from tenantmail.tenancy import TenantCache, current_tenant
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, Tenants


class CloseRaises(LocmemBackend):
    closed = 0

    def close(self) -> None:
        CloseRaises.closed += 1
        raise OSError("the server already hung up")


def test_a_failing_close_is_logged_not_raised() -> None:
    pool = ConnectionPool(max_connections=2, idle_timeout=60)
    conn = pool.checkout("k", CloseRaises)
    before = CloseRaises.closed
    pool.checkin(conn, discard=True)  # closes; OSError must not escape
    assert CloseRaises.closed == before + 1
    assert pool.stats().closed == 1


def test_a_connection_from_another_process_is_let_go() -> None:
    pool = ConnectionPool(max_connections=2, idle_timeout=60)
    conn = pool.checkout("k", LocmemBackend)
    stranger = Connection(key="k", backend=conn.backend, generation=0, pid=-1)
    pool.checkin(stranger)
    assert pool.stats().in_use == 1  # not decremented: it was never ours
    assert pool.stats().idle == 0
    pool.checkin(conn)
    assert pool.stats().idle == 1


def test_pool_forgets_inherited_connections_after_a_fork() -> None:
    pool = ConnectionPool(max_connections=2, idle_timeout=60)
    pool.checkin(pool.checkout("k", LocmemBackend))
    pool._pid = -1  # as if this process were the fork child of process -1
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.closed) == (0, 0, 0)  # forgotten, not closed


def test_close_at_exit_clears_the_process_pool() -> None:
    pool = pool_module.get_pool()
    pool.checkin(pool.checkout(("x", "fp"), LocmemBackend))
    assert pool.stats().idle == 1
    pool_module._close_at_exit()
    assert pool.stats().idle == 0


def test_tenant_cache_disabled_with_zero_seconds(tenants: Tenants, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "TENANT_CACHE_SECONDS": 0}
    cache = TenantCache()
    assert cache.get("acme").pk == tenants.acme.pk
    assert cache.get("acme").pk == tenants.acme.pk
    assert cache.queries == 2


def test_tenant_cache_is_bounded(tenants: Tenants) -> None:
    cache = TenantCache()
    cache.MAX_ENTRIES = 2  # type: ignore[misc]
    for schema in ("acme", "globex", "initech", "acme"):
        cache.get(schema)
    assert cache.queries == 4  # acme was evicted by the time it was asked for again
    cache.get("initech")
    assert cache.queries == 4


def test_no_tenant_anywhere_is_platform_mail(db: None) -> None:
    assert current_tenant() is None  # public schema


def test_something_that_is_not_a_tenant(db: None) -> None:
    with pytest.raises(TenantMailConfigurationError, match="got int"):
        current_tenant(42)


def test_invalidation_ignores_objects_without_a_schema() -> None:
    tenant_changed(sender=object, instance=object())  # nothing to forget, nothing raised


def test_fixture_plaintext_json_is_accepted_then_encrypted() -> None:
    field = EncryptedJSONField()
    value = field.to_python('{"api_key": "key-from-a-fixture-0000"}')
    assert isinstance(value, SecretDict)
    assert value["api_key"] == "key-from-a-fixture-0000"
    assert field.get_prep_value(value).startswith("gAAAAA")
    with pytest.raises(ValidationError):
        field.to_python("api_key=oops")
    with pytest.raises(ValidationError):
        field.to_python("[1, 2]")


def test_app_without_tenant_model_connects_no_signals(settings: Any) -> None:
    receivers_before = len(post_save.receivers)
    del settings.TENANT_MODEL
    apps.get_app_config("tenantmail").ready()
    assert len(post_save.receivers) == receivers_before


def test_resolution_cache_sees_options_changed_in_place(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = tenants.acme
    assert mailer(tenant=acme).resolve().options["api_key"] == ACME_KEY  # now memoized
    acme.mail_options["api_key"] = "key-changed-in-place-5555555"  # same dict object, no save
    assert mailer(tenant=acme).resolve().options["api_key"] == "key-changed-in-place-5555555"


def test_resolution_cache_never_mistakes_undecryptable_options_for_empty(
    tenants: Tenants, settings: Any
) -> None:
    locmem = "django.core.mail.backends.locmem.EmailBackend"  # needs no option: {} is valid
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ALLOWED_BACKENDS": [locmem]}
    acme = tenants.acme
    acme.mail_backend, acme.mail_options = locmem, {}
    assert mailer(tenant=acme).resolve().backend == locmem  # memoized as valid
    acme.mail_options = UndecryptableOptions("gAAAAAnot-a-real-token")
    with pytest.raises(TenantMailConfigurationError, match="ENCRYPTION_KEYS"):
        mailer(tenant=acme).resolve()


def test_a_message_that_breaks_the_defaults_returns_its_connection(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = tenants.acme
    acme.mail_defaults = {"headers": {"X-Tenant-Campaign": "spring"}}
    acme.save()
    broken = EmailMessage("s", "b", to=["a@example.com"])
    broken.extra_headers = None  # type: ignore[assignment]
    with pytest.raises(TypeError):
        mailer(tenant=acme).send_messages([broken])
    assert pool_module.stats().in_use == 0
    assert fake_esp.messages == []


class _EqualityRaises(dict[str, Any]):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    __hash__ = None  # type: ignore[assignment]


def test_the_warm_path_resolves_an_option_that_cannot_be_compared(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = tenants.acme
    assert mailer(tenant=acme).resolve().options["api_key"] == ACME_KEY  # memoized
    acme.mail_options = _EqualityRaises(acme.mail_options)
    # The memo cannot compare it: resolved (and validated) again, not served from the memo.
    assert mailer(tenant=acme).resolve().options["api_key"] == ACME_KEY


def test_the_warm_path_loads_a_deferred_mail_field(tenants: Tenants, fake_esp: FakeESP) -> None:
    assert mailer(tenant=tenants.acme).resolve().options["api_key"] == ACME_KEY  # memoized
    deferred = type(tenants.acme).objects.defer("mail_options").get(pk=tenants.acme.pk)
    assert "mail_options" not in vars(deferred)
    assert mailer(tenant=deferred).resolve().options["api_key"] == ACME_KEY


def test_a_model_instance_without_a_schema_name_is_refused(tenants: Tenants) -> None:
    odd = type(tenants.acme)(pk=tenants.acme.pk)
    odd.schema_name = None
    with pytest.raises(TenantMailConfigurationError, match="schema name"):
        mailer(tenant=odd).resolve()
