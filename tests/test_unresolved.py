"""A lost tenant is never silently the platform account (issue 8, item 1).

Inside ``sending_as("acme")`` or ``schema_context("acme")`` a worker thread of a
``ThreadPoolExecutor`` / ``loop.run_in_executor`` sees neither: the contextvar is not copied and
the schema lives on the (per-thread) database connection. Such a send is *unresolved*: it warns
naming the call site (or raises, under ``UNRESOLVED="raise"``); with :func:`carry_tenant` it is
acme's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connection
from django.test import Client as HttpClient
from django_tenants.utils import schema_context, tenant_context

from tenantmail import TenantThreadPoolExecutor, carry_tenant, mailer, sending_as
from tenantmail.backends import TenantBackend
from tenantmail.exceptions import TenantMailConfigurationError, UnresolvedTenantError
from tenantmail.factory import HAS_MAILERS
from tenantmail.tenancy import tenant_cache
from tenantmail.testing import FakeESP
from tenantmail.unresolved import call_site
from tests.conftest import ACME_KEY, PLATFORM_KEY, Tenants

pytestmark = pytest.mark.django_db


def send_one(subject: str) -> int:
    return mailer().send_messages([EmailMessage(subject, "body", to=["someone@example.com"])])


#: Where an unresolved send_one() must say it was called from.
SEND_SITE = f"{__file__}:{send_one.__code__.co_firstlineno + 1}"

CONTEXTS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "sending_as": lambda: sending_as("acme"),
    "schema_context": lambda: schema_context("acme"),
}


@pytest.fixture(params=sorted(CONTEXTS))
def acme_context(
    request: pytest.FixtureRequest, tenants: Tenants
) -> Callable[[], AbstractContextManager[Any]]:
    # Look acme up here, on this thread's connection: a worker thread has no test transaction.
    tenant_cache.get("acme")
    return CONTEXTS[request.param]


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="tenantmail"):
        yield caplog


def unresolved_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tenantmail"
        and r.levelno == logging.WARNING
        and "no tenant context" in r.getMessage()
    ]


def run_in_executor(fn: Callable[[str], int], subject: str) -> int:
    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, fn, subject)

    return asyncio.run(main())


def in_pool(
    fn: Callable[[str], int], subject: str, executor: ThreadPoolExecutor | None = None
) -> int:
    with executor or ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, subject).result()


# -- without the helper: unresolved -----------------------------------------------------------


def test_executor_worker_is_unresolved_warns_and_names_the_call_site(
    acme_context: Callable[[], AbstractContextManager[Any]],
    fake_esp: FakeESP,
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    with acme_context():
        assert in_pool(send_one, "thread pool") == 1
        assert run_in_executor(send_one, "run_in_executor") == 1
    received = {m.subject: m.credential for m in fake_esp.wait_for(2)}
    assert received == {"thread pool": PLATFORM_KEY, "run_in_executor": PLATFORM_KEY}
    found = unresolved_warnings(warnings_log)
    assert len(found) == 2
    for text in found:
        assert SEND_SITE in text
        assert 'TENANTMAIL["UNRESOLVED"]' in text
        assert "carry_tenant" in text


def test_executor_worker_raises_when_unresolved_is_raise(
    acme_context: Callable[[], AbstractContextManager[Any]], fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    with acme_context():
        with pytest.raises(UnresolvedTenantError) as raised:
            in_pool(send_one, "thread pool")
        with pytest.raises(UnresolvedTenantError):
            run_in_executor(send_one, "run_in_executor")
    assert isinstance(raised.value, TenantMailConfigurationError)
    assert raised.value.setting == 'TENANTMAIL["UNRESOLVED"]'
    assert SEND_SITE in str(raised.value)
    assert fake_esp.messages == []


# -- with the helper: acme's account ----------------------------------------------------------


def test_carry_tenant_sends_as_acme_from_a_worker(
    acme_context: Callable[[], AbstractContextManager[Any]],
    fake_esp: FakeESP,
    warnings_log: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    with acme_context():
        assert in_pool(carry_tenant(send_one), "carried, thread pool") == 1
        assert run_in_executor(carry_tenant(send_one), "carried, run_in_executor") == 1
        assert in_pool(send_one, "tenant executor", TenantThreadPoolExecutor(max_workers=1)) == 1

    async def main() -> int:
        loop = asyncio.get_running_loop()
        with TenantThreadPoolExecutor(max_workers=1) as executor:
            return await loop.run_in_executor(executor, send_one, "tenant executor, loop")

    async def default_executor() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(TenantThreadPoolExecutor(max_workers=1))
        return await loop.run_in_executor(None, send_one, "default executor")

    # Inside a coroutine django-tenants' connection is a different one (Django keeps one per
    # async context), so there only sending_as() -- a contextvar -- says who is sending.
    with sending_as("acme"):
        assert asyncio.run(main()) == 1
        assert asyncio.run(default_executor()) == 1
    received = {m.subject: m.credential for m in fake_esp.wait_for(5)}
    assert len(received) == 5
    assert set(received.values()) == {ACME_KEY}
    assert unresolved_warnings(warnings_log) == []


def test_carry_tenant_restores_the_workers_own_schema(tenants: Tenants) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        with schema_context("acme"):
            carried = carry_tenant(lambda: connection.schema_name)
        assert pool.submit(carried).result() == "acme"
        # The same pooled thread is back on its own (public) schema afterwards.
        assert pool.submit(lambda: connection.schema_name).result() == "public"


def test_asyncio_tasks_and_to_thread_inherit_sending_as(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    tenant_cache.get("acme")

    async def main() -> None:
        with sending_as("acme"):
            await asyncio.to_thread(send_one, "to_thread")
            await asyncio.create_task(asyncio.to_thread(send_one, "task"))

    asyncio.run(main())
    assert {m.credential for m in fake_esp.wait_for(2)} == {ACME_KEY}


# -- platform mail: said explicitly, so no warning ---------------------------------------------


def test_explicit_platform_mail_does_not_warn(
    tenants: Tenants, fake_esp: FakeESP, warnings_log: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    public = type(tenants.acme).objects.get(schema_name="public")
    email = EmailMessage("x", "body", to=["someone@example.com"])
    with sending_as(None):
        mailer().send_messages([email])
    with schema_context("acme"), sending_as(None):
        mailer().send_messages([email])
    mailer(tenant="public").send_messages([email])
    mailer(tenant=public).send_messages([email])
    TenantBackend(tenant="public").send_messages([email])  # a MAILERS alias pinning "public"
    with tenant_context(public):
        mailer().send_messages([email])
    assert {m.credential for m in fake_esp.wait_for(6)} == {PLATFORM_KEY}
    assert len(fake_esp.messages) == 6
    assert unresolved_warnings(warnings_log) == []


def test_public_site_request_is_platform_mail(
    tenants: Tenants, fake_esp: FakeESP, warnings_log: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    response = HttpClient(headers={"host": "localhost"}).get("/send/")
    assert response.content == b"1"
    (received,) = fake_esp.wait_for(1)
    assert received.credential == PLATFORM_KEY
    assert unresolved_warnings(warnings_log) == []


def test_no_context_at_all_warns_in_the_main_thread_too(
    tenants: Tenants, fake_esp: FakeESP, warnings_log: pytest.LogCaptureFixture
) -> None:
    connection.set_schema_to_public()  # what every new connection starts with
    send_one("no context")
    # django-tenants leaves schema_context("public") looking exactly like that starting state,
    # so it counts as unresolved too (documented; say sending_as(None) for platform mail).
    with schema_context("public"):
        send_one("schema_context public")
    assert {m.credential for m in fake_esp.wait_for(2)} == {PLATFORM_KEY}
    assert len(unresolved_warnings(warnings_log)) == 2


def test_unresolved_setting_is_validated(settings: Any) -> None:
    from tenantmail.conf import load_settings

    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "ignore"}
    with pytest.raises(TenantMailConfigurationError, match=r'TENANTMAIL\["UNRESOLVED"\]'):
        load_settings()


def test_call_site_skips_library_and_stdlib_frames() -> None:
    def here() -> str:
        return call_site()

    line = here.__code__.co_firstlineno + 1
    assert here() == f"{__file__}:{line}"
    # Called through the stdlib (functools) it still names this file.
    import functools

    assert functools.partial(here)() == f"{__file__}:{line}"


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS needs Django 6.1")
def test_mailers_alias_pinned_to_public_is_platform_mail(
    tenants: Tenants, fake_esp: FakeESP, warnings_log: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "UNRESOLVED": "raise"}
    settings.MAILERS = {
        **settings.MAILERS,
        "platform": {
            "BACKEND": "tenantmail.backends.TenantBackend",
            "OPTIONS": {"tenant": "public"},
        },
    }
    email = EmailMessage("pinned", "body", to=["someone@example.com"])
    email.send(using="platform")  # no tenant context at all
    with schema_context("acme"):
        email.send(using="platform")  # acme's context: still the platform
    assert [m.credential for m in fake_esp.wait_for(2)] == [PLATFORM_KEY, PLATFORM_KEY]
    assert unresolved_warnings(warnings_log) == []
