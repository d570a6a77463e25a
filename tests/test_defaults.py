"""A tenant's message defaults, applied for one send only, and the signals around each batch.

Sends go through real backends: the loopback fake ESP (which records from_email and metadata as
the ESP saw them), or Anymail's own test backend, which records every parameter it would have
sent in ``message.anymail_test_params``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage
from anymail.signals import pre_send as anymail_pre_send
from django.core.mail import EmailMessage

from tenantmail import mailer, signals
from tenantmail.backends import TenantBackend
from tenantmail.config import MailConfig
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.testing import FakeESP
from tests.conftest import ACME_KEY, GLOBEX_TOKEN, PLATFORM_KEY, Tenants
from tests.tenants_app.models import Client

pytestmark = pytest.mark.django_db

TEST_BACKEND = "anymail.backends.test.EmailBackend"
PLATFORM_FROM = "platform@saas.example"  # settings.DEFAULT_FROM_EMAIL


def message(subject: str = "Hello", **kwargs: Any) -> EmailMessage:
    return EmailMessage(subject, "body", to=["customer@example.com"], **kwargs)


def anymail_message(subject: str = "Hello", **kwargs: Any) -> AnymailMessage:
    return AnymailMessage(subject, "body", to=["customer@example.com"], **kwargs)


def with_defaults(tenant: Client, defaults: dict[str, Any]) -> Client:
    tenant.mail_defaults = defaults
    tenant.save()
    return Client.objects.get(pk=tenant.pk)


@pytest.fixture
def recording_tenant(tenants: Tenants, settings: Any) -> Any:
    """Make acme send through Anymail's test backend, with the given mail_defaults."""
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "postmark", "smtp", TEST_BACKEND],
    }

    def configure(defaults: dict[str, Any]) -> Client:
        acme = tenants.acme
        acme.mail_backend = TEST_BACKEND
        acme.mail_options = {}
        return with_defaults(acme, defaults)

    return configure


def sent_params(tenant: Client, msg: EmailMessage) -> dict[str, Any]:
    assert mailer(tenant=tenant).send_messages([msg]) == 1
    params: dict[str, Any] = msg.anymail_test_params  # type: ignore[attr-defined]
    return params


def own_state(msg: EmailMessage) -> dict[str, Any]:
    """What the message itself holds (Anymail adds its status/params after a send)."""
    skip = {"anymail_status", "anymail_test_params", "_connection"}
    return {k: v for k, v in vars(msg).items() if k not in skip}


# -- from_email ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "hello@acme.example"),  # Django fills in DEFAULT_FROM_EMAIL: counts as unset
        (PLATFORM_FROM, "hello@acme.example"),
        ("", "hello@acme.example"),
        ("sales@acme.example", "sales@acme.example"),
        ("Platform <platform@saas.example>", PLATFORM_FROM),  # explicitly chosen: kept
    ],
)
def test_from_email_default_fills_only_an_unset_sender(
    tenants: Tenants, fake_esp: FakeESP, given: str | None, expected: str
) -> None:
    msg = message(from_email=given)
    if given == "":
        msg.from_email = ""
    before = msg.from_email
    mailer(tenant=tenants.acme).send_messages([msg])
    (received,) = fake_esp.wait_for(1)
    assert received.from_email == expected
    assert msg.from_email == before


def test_tenant_without_from_email_default_keeps_the_platform_sender(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    mailer(tenant=tenants.globex).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert (received.from_email, received.credential) == (PLATFORM_FROM, GLOBEX_TOKEN)


# -- reply_to, headers, tags, esp_extra, tracking -----------------------------------------


@pytest.mark.parametrize(
    ("default", "own", "expected"),
    [
        ("support@acme.example", None, ["support@acme.example"]),
        (["a@acme.example", "b@acme.example"], None, ["a@acme.example", "b@acme.example"]),
        ("support@acme.example", ["mine@example.com"], ["mine@example.com"]),
    ],
)
def test_reply_to_default(
    recording_tenant: Any, default: Any, own: list[str] | None, expected: list[str]
) -> None:
    acme = recording_tenant({"reply_to": default})
    msg = message(reply_to=own)
    params = sent_params(acme, msg)
    assert [address.addr_spec for address in params["reply_to"]] == expected
    assert msg.reply_to == (own or [])


def test_headers_merge_and_the_message_wins_case_insensitively(recording_tenant: Any) -> None:
    acme = recording_tenant(
        {"headers": {"X-Campaign": "tenant", "List-Unsubscribe": "<mailto:u@acme.example>"}}
    )
    msg = message(headers={"x-campaign": "mine"})
    params = sent_params(acme, msg)
    assert dict(params["extra_headers"]) == {
        "List-Unsubscribe": "<mailto:u@acme.example>",
        "x-campaign": "mine",
    }
    assert msg.extra_headers == {"x-campaign": "mine"}

    # Nothing to add when the message already has every default header.
    acme = with_defaults(acme, {"headers": {"X-CAMPAIGN": "tenant"}})
    msg = message(headers={"x-campaign": "mine"})
    assert dict(sent_params(acme, msg)["extra_headers"]) == {"x-campaign": "mine"}


def test_tags_merge_without_duplicates(recording_tenant: Any) -> None:
    acme = recording_tenant({"tags": ["shared", "tenant"]})
    msg = anymail_message(tags=["mine", "shared"])
    assert sent_params(acme, msg)["tags"] == ["mine", "shared", "tenant"]
    assert msg.tags == ["mine", "shared"]

    plain = message()
    assert sent_params(acme, plain)["tags"] == ["shared", "tenant"]
    assert "tags" not in vars(plain)


def test_esp_extra_merges_and_the_message_wins(recording_tenant: Any) -> None:
    acme = recording_tenant({"esp_extra": {"pool": "tenant", "region": "eu"}})
    msg = anymail_message(esp_extra={"pool": "message"})
    params = sent_params(acme, msg)  # the test backend merges esp_extra into its params
    assert (params["pool"], params["region"]) == ("message", "eu")
    assert msg.esp_extra == {"pool": "message"}


def test_track_flags_default_only_when_the_message_leaves_them_unset(
    recording_tenant: Any,
) -> None:
    acme = recording_tenant({"track_opens": True, "track_clicks": False})
    params = sent_params(acme, anymail_message(track_clicks=True))
    assert (params["track_opens"], params["track_clicks"]) == (True, True)
    plain = message()
    params = sent_params(acme, plain)
    assert (params["track_opens"], params["track_clicks"]) == (True, False)
    assert "track_opens" not in vars(plain)


# -- metadata ------------------------------------------------------------------------------


def test_metadata_merges_and_the_tenant_trace_always_wins(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(
        tenants.acme, {"metadata": {"plan": "pro", "source": "tenant"}, "from_email": "a@a.example"}
    )
    msg = anymail_message(metadata={"source": "message", "tenant": "forged"})
    mailer(tenant=acme).send_messages([msg])
    (received,) = fake_esp.wait_for(1)
    assert received.metadata == {"plan": "pro", "source": "message", "tenant": "acme"}
    assert msg.metadata == {"source": "message", "tenant": "forged"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [("tenant_schema", {"tenant_schema": "globex"}), (None, {})],
)
def test_metadata_key_setting(
    tenants: Tenants, fake_esp: FakeESP, settings: Any, key: str | None, expected: dict[str, str]
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "METADATA_KEY": key}
    plain = message()
    mailer(tenant=tenants.globex).send_messages([plain])
    (received,) = fake_esp.wait_for(1)
    assert received.metadata == expected
    assert "metadata" not in vars(plain)


def test_metadata_key_none_keeps_the_tenants_own_metadata(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "METADATA_KEY": None}
    globex = with_defaults(tenants.globex, {"metadata": {"plan": "pro"}})
    mailer(tenant=globex).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.metadata == {"plan": "pro"}


# -- the message is restored ---------------------------------------------------------------


def test_message_is_restored_so_a_resend_for_another_tenant_is_clean(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    acme = with_defaults(
        tenants.acme,
        {
            "from_email": "hello@acme.example",
            "reply_to": "support@acme.example",
            "headers": {"X-Acme": "1"},
            "tags": ["acme"],
            "metadata": {"plan": "acme-pro"},
            "track_opens": True,
        },
    )
    msg = message("same object")
    before = own_state(msg)
    mailer(tenant=acme).send_messages([msg])
    assert own_state(msg) == before
    mailer(tenant=tenants.globex).send_messages([msg])
    assert own_state(msg) == before

    for_acme, for_globex = fake_esp.wait_for(2)
    assert (for_acme.credential, for_acme.from_email) == (ACME_KEY, "hello@acme.example")
    assert for_acme.metadata == {"plan": "acme-pro", "tenant": "acme"}
    assert (for_globex.credential, for_globex.from_email) == (GLOBEX_TOKEN, PLATFORM_FROM)
    assert for_globex.metadata == {"tenant": "globex"}


def test_message_is_restored_when_the_send_fails(tenants: Tenants, fake_esp: FakeESP) -> None:
    msg = anymail_message(tags=["mine"])
    before = own_state(msg)
    fake_esp.fail_next(500)
    with pytest.raises(AnymailAPIError):
        mailer(tenant=tenants.acme).send_messages([msg])
    assert own_state(msg) == before
    assert msg.from_email == PLATFORM_FROM


def test_same_message_twice_in_one_batch_is_restored(tenants: Tenants, fake_esp: FakeESP) -> None:
    acme = with_defaults(tenants.acme, {"tags": ["acme-tag"], "metadata": {"plan": "acme-pro"}})
    msg = message()
    before = own_state(msg)
    mailer(tenant=acme).send_messages([msg, msg])
    assert own_state(msg) == before


def test_defaults_are_visible_inside_the_send(tenants: Tenants, fake_esp: FakeESP) -> None:
    seen: list[tuple[str, Any]] = []

    def capture(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        seen.append((message.from_email, getattr(message, "metadata", None)))

    anymail_pre_send.connect(capture, weak=False)
    try:
        msg = message()
        mailer(tenant=tenants.acme).send_messages([msg])
    finally:
        anymail_pre_send.disconnect(capture)
    assert seen == [("hello@acme.example", {"tenant": "acme"})]
    assert msg.from_email == PLATFORM_FROM


def test_platform_mail_is_untouched(tenants: Tenants, settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": {"BACKEND": TEST_BACKEND}}
    initech = with_defaults(
        tenants.initech,
        {"from_email": "hello@initech.example", "tags": ["initech"], "headers": {"X-I": "1"}},
    )
    platform_msg = message()
    before = own_state(platform_msg)
    params = sent_params(Client.objects.get(schema_name="public"), platform_msg)
    assert params["from"].addr_spec == PLATFORM_FROM
    assert "metadata" not in params
    assert "tags" not in params
    assert own_state(platform_msg) == before

    # A tenant on the platform account still gets its defaults and the trace.
    params = sent_params(initech, message())
    assert params["from"].addr_spec == "hello@initech.example"
    assert (params["metadata"], params["tags"]) == ({"tenant": "initech"}, ["initech"])


# -- validation of mail_defaults -----------------------------------------------------------


@pytest.mark.parametrize(
    ("defaults", "field"),
    [
        ({"from_email": "hello@acme.example\nBcc: victim@example.com"}, "from_email"),
        ({"from_email": "hello@acme.example\r"}, "from_email"),
        ({"reply_to": "a@acme.example\r\nBcc: victim@example.com"}, "reply_to"),
        ({"reply_to": ["ok@acme.example", "b@acme.example\nBcc: x@y.example"]}, "reply_to"),
        ({"headers": {"X-Ok": "fine\r\nBcc: victim@example.com"}}, "headers"),
        ({"headers": {"X-Bad\nBcc": "value"}}, "headers"),
    ],
)
def test_line_break_in_a_default_is_header_injection(
    tenants: Tenants, fake_esp: FakeESP, defaults: dict[str, Any], field: str
) -> None:
    acme = with_defaults(tenants.acme, defaults)
    with pytest.raises(TenantMailConfigurationError) as excinfo:
        mailer(tenant=acme).send_messages([message()])
    assert (excinfo.value.tenant, excinfo.value.setting) == ("acme", "mail_defaults")
    assert str(excinfo.value) == (
        f"tenant 'acme', mail_defaults: {field!r} contains a line break (header injection)"
    )
    assert ACME_KEY not in str(excinfo.value)
    assert fake_esp.messages == []


@pytest.mark.parametrize(
    ("defaults", "problem"),
    [
        ({"from_email": 5}, "'from_email' has the wrong type int"),
        ({"track_opens": "yes"}, "'track_opens' has the wrong type str"),
        ({"tags": "one"}, "'tags' has the wrong type str"),
        ({"reply_to": {"a": 1}}, "'reply_to' has the wrong type dict"),
        ({"cc": ["x@example.com"]}, "unknown key 'cc'"),
        ({"from_email": "a" * 4097 + "@acme.example"}, "'from_email' has a value longer than 4096"),
        ({"metadata": {"note": "x" * 5000}}, "'metadata' has a value longer than 4096"),
        (["from_email"], "must be a JSON object, got list"),
    ],
)
def test_malformed_defaults_are_configuration_errors(
    tenants: Tenants, fake_esp: FakeESP, defaults: Any, problem: str
) -> None:
    # Also for a tenant on the platform account: its defaults are still its own.
    initech = with_defaults(tenants.initech, defaults)
    with pytest.raises(TenantMailConfigurationError) as excinfo:
        mailer(tenant=initech).send_messages([message()])
    assert (excinfo.value.tenant, excinfo.value.setting) == ("initech", "mail_defaults")
    assert problem in str(excinfo.value)
    assert PLATFORM_KEY not in str(excinfo.value)
    assert fake_esp.messages == []


def test_line_breaks_are_fine_outside_headers(tenants: Tenants, fake_esp: FakeESP) -> None:
    # Metadata travels as API data, not as a header line.
    globex = with_defaults(tenants.globex, {"metadata": {"note": "line one\nline two"}})
    mailer(tenant=globex).send_messages([message()])
    (received,) = fake_esp.wait_for(1)
    assert received.metadata == {"note": "line one\nline two", "tenant": "globex"}


# -- signals -------------------------------------------------------------------------------


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    recorded: list[tuple[str, Any, dict[str, Any]]] = []

    def on_pre(sender: Any, **kwargs: Any) -> None:
        recorded.append(("pre", sender, kwargs))

    def on_post(sender: Any, **kwargs: Any) -> None:
        recorded.append(("post", sender, kwargs))

    signals.pre_send.connect(on_pre, weak=False)
    signals.post_send.connect(on_post, weak=False)
    yield recorded
    signals.pre_send.disconnect(on_pre)
    signals.post_send.disconnect(on_post)


def test_signals_carry_tenant_config_messages_and_outcome(
    tenants: Tenants, fake_esp: FakeESP, events: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    backend = mailer(tenant=tenants.acme)
    batch = [message("one"), message("two")]
    assert backend.send_messages(batch) == 2

    (pre_name, pre_sender, pre), (post_name, post_sender, post) = events
    assert (pre_name, post_name) == ("pre", "post")
    assert pre_sender is TenantBackend
    assert post_sender is TenantBackend
    assert set(pre) == {"signal", "tenant", "config", "backend", "messages"}
    assert set(post) == {"signal", "tenant", "config", "backend", "messages", "sent", "error"}
    assert pre["tenant"] == post["tenant"] == "acme"
    assert pre["backend"] is backend
    assert post["backend"] is backend
    assert pre["messages"] is batch
    assert post["messages"] is batch
    config = pre["config"]
    assert isinstance(config, MailConfig)
    assert post["config"] is config
    assert (config.tenant, config.own_account, config.options["api_key"]) == (
        "acme",
        True,
        ACME_KEY,
    )
    assert ACME_KEY not in repr(config)
    assert (post["sent"], post["error"]) == (2, None)


def test_signals_for_platform_mail(
    tenants: Tenants, fake_esp: FakeESP, events: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    mailer().send_messages([message()])
    (_, _, pre), (_, _, post) = events
    assert pre["tenant"] is None
    assert post["tenant"] is None
    assert pre["config"].own_account is False
    assert pre["config"].options["api_key"] == PLATFORM_KEY
    assert (post["sent"], post["error"]) == (1, None)


def test_post_send_reports_the_error(
    tenants: Tenants, fake_esp: FakeESP, events: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    fake_esp.fail_next(500)
    with pytest.raises(AnymailAPIError) as excinfo:
        mailer(tenant=tenants.globex).send_messages([message()])
    assert excinfo.value.__notes__ == [
        "tenantmail: while sending for tenant 'globex' via "
        "anymail.backends.postmark.EmailBackend (tenant account)"
    ]
    (_, _, post) = events[-1]
    assert post["error"] is excinfo.value
    assert post["sent"] == 0


def test_fail_silently_swallows_a_send_error_but_still_signals(
    tenants: Tenants, fake_esp: FakeESP, events: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    fake_esp.fail_next(500)
    assert mailer(tenant=tenants.initech, fail_silently=True).send_messages([message()]) == 0
    (_, _, post) = events[-1]
    assert isinstance(post["error"], AnymailAPIError)
    assert post["tenant"] == "initech"
    assert post["sent"] == 0
    assert fake_esp.messages == []
    # The connection that failed was discarded; the next send works.
    assert mailer(tenant=tenants.initech).send_messages([message()]) == 1


def test_no_signals_for_an_empty_batch_or_a_configuration_error(
    tenants: Tenants, events: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    assert mailer(tenant=tenants.acme).send_messages([]) == 0
    broken = with_defaults(tenants.acme, {"cc": []})
    with pytest.raises(TenantMailConfigurationError):
        mailer(tenant=broken).send_messages([message()])
    assert events == []
