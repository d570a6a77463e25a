"""TenantBackend and the process-wide pool against a simple model, under random interleavings.

Hypothesis drives a :class:`~hypothesis.stateful.RuleBasedStateMachine` through switch tenant /
send / rotate credentials / evict / clear pool / close backend. The model is two small things:

* each tenant's account -- ``(esp, credential)``, or ``None`` for the platform's account -- which
  every message the fake ESP receives must carry, and
* the pool as an LRU list of *idle* pool keys ``(tenant or None, credential)`` bounded by
  ``MAX_CONNECTIONS``: a send reuses its key's entry (a hit) or makes room by closing the least
  recently used one and opens a new one (a miss); saving a tenant closes that tenant's idle
  entries (post_save -> ``forget_tenant``), ``drop()`` and ``clear()`` close what they name, and
  a key rotated by *another* process closes nothing -- the old key's idle entry stays, and must
  never serve the new key -- once this process' cached row has expired.

After every step the pool's own counters must equal the model's, nothing may be checked out, idle
connections never exceed the bound, and the fake ESP must see exactly one HTTP connection per
pooled backend ever opened and -- once it has noticed closed ones -- as many open as the model
has idle entries. Everything runs in the test's transaction on one thread: the two extra tenants
are rows without schemas, which is all sending by schema name needs. A second test replays one
fixed sequence and checks the model's numbers against hand-counted ones.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from anymail.signals import pre_send as anymail_pre_send
from django.core.mail import EmailMessage
from django_tenants.utils import schema_context
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import tenantmail.pool as pool_module
from tenantmail import mailer, sending_as
from tenantmail.backends import TenantBackend
from tenantmail.pool import PoolStats
from tenantmail.tenancy import tenant_cache
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants
from tests.tenants_app.models import Client

BOUND = 2  # MAX_CONNECTIONS: far fewer than the tenants, so LRU eviction happens on its own
NAMES = ("acme", "globex", "initech", "umbrella", "stark")
HOW = ("tenant=schema", "tenant=instance", "schema_context", "sending_as")
COUNTERS = ("hits", "misses", "opened", "closed", "evicted", "expired", "discarded", "overflow")
SETTLE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Account:
    """A tenant's own ESP account."""

    esp: str  # "mailgun" or "postmark"
    credential: str


#: What each tenant starts every example with (``None``: the platform's account).
INITIAL: dict[str, Account | None] = {
    "acme": Account("mailgun", ACME_KEY),
    "globex": Account("postmark", GLOBEX_TOKEN),
    "initech": None,
    "umbrella": Account("mailgun", "key-umbrella-0000000000000"),
    "stark": Account("postmark", "pm-stark-00000000000000000"),
}
PLATFORM = Account("mailgun", PLATFORM_KEY)

PoolKey = tuple[str | None, str]


def apply_account(
    tenant: Client, account: Account | None, esp: FakeESP, *, elsewhere: bool = False
) -> None:
    """Store ``account`` on the tenant: ``save()`` as an admin form would, or as another process.

    ``elsewhere=True`` writes with ``QuerySet.update()`` -- no post_save in this process, so
    nothing here is told -- and keeps the in-memory instance in step, as a fresh one would be.
    """
    schema = tenant.schema_name
    if account is None:
        tenant.mail_backend, tenant.mail_options = "", {}
    elif account.esp == "mailgun":
        tenant.mail_backend = "mailgun"
        tenant.mail_options = {
            "api_key": account.credential,
            "sender_domain": f"mg.{schema}.example",
            "api_url": esp.mailgun_api_url,
        }
    else:
        tenant.mail_backend = "postmark"
        tenant.mail_options = {"server_token": account.credential, "api_url": esp.postmark_api_url}
    if elsewhere:
        Client.objects.filter(pk=tenant.pk).update(
            mail_backend=tenant.mail_backend, mail_options=tenant.mail_options
        )
    else:
        tenant.save()


def settle(predicate: Callable[[], bool]) -> bool:
    """Poll for something the fake ESP notices asynchronously (a closed socket); bounded."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


class PoolModel:
    """The pool as it should be: idle keys, least recently used first, and its counters."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.idle: OrderedDict[PoolKey, None] = OrderedDict()
        self.counts = dict.fromkeys(COUNTERS, 0)

    def send(self, key: PoolKey) -> None:
        if key in self.idle:
            self.counts["hits"] += 1
            del self.idle[key]
        else:
            self.counts["misses"] += 1
            while len(self.idle) >= self.bound:
                self.idle.popitem(last=False)
                self.counts["evicted"] += 1
                self.counts["closed"] += 1
            self.counts["opened"] += 1
        self.idle[key] = None  # checked in: most recently used

    def drop(self, tenant: str | None) -> None:
        for key in [k for k in self.idle if k[0] == tenant]:
            del self.idle[key]
            self.counts["closed"] += 1

    def clear(self) -> None:
        self.counts["closed"] += len(self.idle)
        self.idle.clear()


class TenantMailMachine(RuleBasedStateMachine):
    def __init__(self, esp: FakeESP, instances: dict[str, Client]) -> None:
        super().__init__()
        self.esp = esp
        self.instances = instances
        # Every example starts from the same rows, an empty pool, cache and mailbox.
        for name, account in INITIAL.items():
            apply_account(instances[name], account, esp)
        self.accounts: dict[str, Account | None] = dict(INITIAL)
        tenant_cache.invalidate()
        pool_module.clear()
        assert settle(lambda: esp.open_connections == 0), esp.open_connections
        esp.clear()
        self.baseline = pool_module.stats()
        self.model = PoolModel(BOUND)
        self.current = "acme"
        self.backend: TenantBackend = mailer()
        self.sent = 0
        self.serials = itertools.count(1)

    # -- rules -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def switch_tenant(self, name: str) -> None:
        self.current = name

    @rule(how=st.sampled_from(HOW))
    def send(self, how: str) -> None:
        self._send(how)

    @rule(name=st.sampled_from(NAMES), how=st.sampled_from(HOW))
    def switch_tenant_and_send(self, name: str, how: str) -> None:
        self.current = name
        self._send(how)

    def _deliver(self, name: str, how: str, subject: str, during_send: list[PoolStats]) -> int:
        # The message lives only in this frame: Anymail hangs the ESP response (and with it the
        # socket) on it, and a failing assertion's traceback must not keep that connection open
        # into Hypothesis' next example.
        msg = EmailMessage(subject, "body", to=["customer@example.com"])

        def record(**kwargs: Any) -> None:
            during_send.append(pool_module.stats())

        anymail_pre_send.connect(record, weak=False)
        try:
            if how == "tenant=schema":
                return mailer(tenant=name).send_messages([msg])
            if how == "tenant=instance":
                return mailer(tenant=self.instances[name]).send_messages([msg])
            if how == "schema_context":
                with schema_context(name):
                    return self.backend.send_messages([msg])
            with sending_as(name):
                return self.backend.send_messages([msg])
        finally:
            anymail_pre_send.disconnect(record)

    def _send(self, how: str) -> None:
        name = self.current
        subject = f"{name}|{self.sent}|{how}"
        during_send: list[PoolStats] = []
        assert self._deliver(name, how, subject, during_send) == 1
        self.sent += 1

        account = self.accounts[name]
        expected = account or PLATFORM
        self.model.send((name if account else None, expected.credential))
        received = self.esp.messages
        assert len(received) == self.sent
        got = received[-1]
        assert got.subject == subject
        assert (got.esp, got.credential) == (expected.esp, expected.credential), got
        assert got.metadata == {"tenant": name}
        # Mid-send (anymail's pre_send, the connection checked out): exactly one in use, and
        # room was made *before* opening, so the bound holds even then.
        assert len(during_send) == 1
        assert during_send[0].in_use == 1
        assert during_send[0].idle + during_send[0].in_use <= BOUND

    @rule(name=st.sampled_from(NAMES), elsewhere=st.booleans())
    def rotate_credentials(self, name: str, elsewhere: bool) -> None:
        """A new credential; a tenant on the platform account gets a Mailgun account of its own.

        ``elsewhere``: written by another process, and this one's cached row has just expired
        (``invalidate`` is what TENANT_CACHE_SECONDS running out does). Nobody closed the old
        key's idle connection: the pool must not hand it out for the new key.
        """
        account = self.accounts[name]
        serial = next(self.serials)
        if account is not None and account.esp == "postmark":
            new = Account("postmark", f"pm-{name}-rotated-{serial:06d}")
        else:
            new = Account("mailgun", f"key-{name}-rotated-{serial:06d}")
        apply_account(self.instances[name], new, self.esp, elsewhere=elsewhere)
        self.accounts[name] = new
        if elsewhere:
            tenant_cache.invalidate(name)
        else:
            self.model.drop(name)  # post_save -> forget_tenant

    @rule(name=st.sampled_from(NAMES))
    def move_to_platform_account(self, name: str) -> None:
        apply_account(self.instances[name], None, self.esp)
        self.accounts[name] = None
        self.model.drop(name)

    @rule(name=st.sampled_from((*NAMES, None)))
    def evict(self, name: str | None) -> None:
        """Close one tenant's idle connections (``None``: the platform account's)."""
        pool_module.get_pool().drop(name)
        self.model.drop(name)

    @rule()
    def clear_pool(self) -> None:
        pool_module.clear()
        self.model.clear()

    @rule(replace=st.booleans())
    def close_backend(self, replace: bool) -> None:
        """Django calls close() after a batch; the pool outlives the TenantBackend instance."""
        self.backend.close()
        if replace:
            self.backend = mailer()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def pool_matches_the_model(self) -> None:
        now = pool_module.stats()
        delta = {name: getattr(now, name) - getattr(self.baseline, name) for name in COUNTERS}
        assert delta == self.model.counts
        assert now.in_use == 0
        assert now.idle == len(self.model.idle) <= BOUND

    @invariant()
    def the_esp_sees_one_connection_per_pooled_backend(self) -> None:
        assert self.esp.connections_opened == self.model.counts["opened"]
        idle = len(self.model.idle)
        assert settle(lambda: self.esp.open_connections == idle), (
            f"{self.esp.open_connections} connections open at the fake ESP, {idle} pooled"
        )
        assert self.esp.open_connections <= BOUND


@pytest.fixture
def instances(tenants: Tenants, settings: Any) -> dict[str, Client]:
    """The five tenants, with a pool of BOUND connections (and no idle expiry mid-example)."""
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MAX_CONNECTIONS": BOUND, "IDLE_TIMEOUT": 3600}
    found = {name: getattr(tenants, name) for name in ("acme", "globex", "initech")}
    for name in ("umbrella", "stark"):
        tenant = Client(schema_name=name, name=name.title())
        tenant.auto_create_schema = False  # a row is all sending by schema name needs
        tenant.save()
        found[name] = tenant
    return found


def test_random_interleavings_keep_credentials_and_the_bound(
    instances: dict[str, Client], fake_esp: FakeESP
) -> None:
    machines: list[TenantMailMachine] = []

    class Machine(TenantMailMachine):
        """Bound to this test's fixtures; Hypothesis makes one per example."""

        def __init__(self) -> None:
            super().__init__(fake_esp, instances)
            machines.append(self)

    run_state_machine_as_test(
        Machine,
        settings=hypothesis_settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert len(machines) >= 50
    assert sum(m.sent for m in machines) > 0
    assert sum(m.model.counts["hits"] for m in machines) > 0


def test_a_known_interleaving_gives_known_counts(
    instances: dict[str, Client], fake_esp: FakeESP
) -> None:
    """The model itself, checked against fixed numbers on one sequence (LRU evictions included)."""
    machine = TenantMailMachine(fake_esp, instances)
    steps: list[Callable[[], None]] = [
        lambda: machine.switch_tenant_and_send("acme", "tenant=schema"),  # miss
        lambda: machine.switch_tenant_and_send("globex", "schema_context"),  # miss
        lambda: machine.switch_tenant_and_send("initech", "sending_as"),  # miss, evicts acme's
        lambda: machine.switch_tenant_and_send("acme", "tenant=instance"),  # miss, evicts globex's
        lambda: machine.switch_tenant_and_send("initech", "schema_context"),  # hit (platform)
        lambda: machine.rotate_credentials("acme", elsewhere=False),  # closes acme's idle one
        lambda: machine.switch_tenant("acme"),
        lambda: machine.send("sending_as"),  # miss: the rotated key, a new connection
        lambda: machine.close_backend(replace=False),
        lambda: machine.send("schema_context"),  # hit
        lambda: machine.rotate_credentials("acme", elsewhere=True),  # closes nothing
        lambda: machine.send("tenant=schema"),  # miss: the newer key, evicts initech's
        lambda: machine.clear_pool(),  # closes acme's two idle ones (old and new key)
    ]
    for step in steps:
        step()
        machine.pool_matches_the_model()
        machine.the_esp_sees_one_connection_per_pooled_backend()

    now = pool_module.stats()
    delta = {name: getattr(now, name) - getattr(machine.baseline, name) for name in COUNTERS}
    expected = {"hits": 2, "misses": 6, "opened": 6, "closed": 6, "evicted": 3}
    assert delta == dict.fromkeys(COUNTERS, 0) | expected
    assert (now.idle, now.in_use) == (0, 0)
    assert [(m.subject.split("|")[0], m.credential) for m in fake_esp.messages] == [
        ("acme", ACME_KEY),
        ("globex", GLOBEX_TOKEN),
        ("initech", PLATFORM_KEY),
        ("acme", ACME_KEY),
        ("initech", PLATFORM_KEY),
        ("acme", "key-acme-rotated-000001"),
        ("acme", "key-acme-rotated-000001"),
        ("acme", "key-acme-rotated-000002"),
    ]
    assert fake_esp.connections_opened == 6
