"""TenantBackend is transparent to Anymail users and their tests (issue 8, item 3).

With TenantBackend as the default mailer and no tenant active, a test suite written for plain
Anymail must behave exactly as it does with Anymail alone: settings changed with
``override_settings`` reach the next send, patched client classes are used, and the inner
backend's own exception types reach the caller. Each scenario runs side by side with a plain,
unpooled backend built per send, and the two outcomes must be equal.
"""

from __future__ import annotations

import pickle
import smtplib
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
import requests
from anymail.backends.mailgun import EmailBackend as MailgunBackend
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.exceptions import (
    AnymailAPIError,
    AnymailConfigurationError,
    AnymailRecipientsRefused,
)
from anymail.message import AnymailMessage, AnymailRecipientStatus
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.test import override_settings

import tenantmail.pool as pool_module
from tenantmail import mailer
from tenantmail.exceptions import TenantMailConfigurationError
from tenantmail.factory import HAS_MAILERS
from tenantmail.testing import FakeESP, FakeSMTP
from tests.conftest import PLATFORM_KEY, Tenants

MAILGUN = "anymail.backends.mailgun.EmailBackend"
ANYMAIL_TEST = "anymail.backends.test.EmailBackend"
SES = "anymail.backends.amazon_ses.EmailBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"


def plain(cls: type[BaseEmailBackend], **options: Any) -> BaseEmailBackend:
    """A plain backend, built the way the user's own code would build it (``mailers`` on 6.1)."""
    return cls(alias="plain", **options) if HAS_MAILERS else cls(**options)


def construction_error(cls: type[BaseEmailBackend], **options: Any) -> type[Exception]:
    try:
        plain(cls, **options)
    except Exception as error:
        return type(error)
    raise AssertionError("expected the backend to refuse these options")


def msg(subject: str = "hi", to: str = "to@example.com") -> AnymailMessage:
    return AnymailMessage(subject, "body", "from@saas.example", [to])


def outcome(send: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("sent", send())
    except Exception as error:
        return ("raised", type(error).__mro__)


def use_platform(settings: Any, backend: str, **options: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "DEFAULT": {"BACKEND": backend, "OPTIONS": options},
    }


# -- settings changed between two sends ---------------------------------------------------------


def test_mailgun_sender_domain_changed_with_override_settings_reaches_the_next_send(
    settings: Any, fake_esp: FakeESP
) -> None:
    settings.ANYMAIL = {
        "MAILGUN_API_KEY": PLATFORM_KEY,
        "MAILGUN_SENDER_DOMAIN": "one.example",
        "MAILGUN_API_URL": fake_esp.mailgun_api_url,
    }
    use_platform(settings, MAILGUN)
    changed = {**settings.ANYMAIL, "MAILGUN_SENDER_DOMAIN": "two.example"}
    for backend in (mailer, lambda: plain(MailgunBackend)):
        fake_esp.clear()
        backend().send_messages([msg("first")])
        with override_settings(ANYMAIL=changed):
            backend().send_messages([msg("second")])
        backend().send_messages([msg("third")])
        assert [m.sender_domain for m in fake_esp.wait_for(3)] == [
            "one.example",
            "two.example",
            "one.example",
        ]


def test_send_defaults_changed_with_override_settings_reach_the_next_send(settings: Any) -> None:
    use_platform(settings, ANYMAIL_TEST)
    settings.ANYMAIL = {"SEND_DEFAULTS": {"tags": ["first"]}}

    def tags_of(backend: Callable[[], BaseEmailBackend]) -> list[Any]:
        mail.outbox = []
        backend().send_messages([msg()])
        with override_settings(ANYMAIL={"SEND_DEFAULTS": {"tags": ["second"]}}):
            backend().send_messages([msg()])
        with override_settings(ANYMAIL={}):
            backend().send_messages([msg()])
        return [m.anymail_test_params.get("tags") for m in mail.outbox]

    assert tags_of(mailer) == tags_of(lambda: plain(AnymailTestBackend))
    assert tags_of(mailer) == [["first"], ["second"], None]


def test_ignore_recipient_status_changed_with_override_settings(settings: Any) -> None:
    use_platform(settings, ANYMAIL_TEST)

    def rejected() -> AnymailMessage:
        message = msg()
        status = AnymailRecipientStatus(message_id=None, status="rejected")
        message.anymail_test_response = {"recipient_status": {"to@example.com": status}}
        return message

    def run(backend: Callable[[], BaseEmailBackend]) -> list[tuple[str, Any]]:
        results = [outcome(lambda: backend().send_messages([rejected()]))]
        with override_settings(ANYMAIL={"IGNORE_RECIPIENT_STATUS": True}):
            results.append(outcome(lambda: backend().send_messages([rejected()])))
        results.append(outcome(lambda: backend().send_messages([rejected()])))
        return results

    ours, theirs = run(mailer), run(lambda: plain(AnymailTestBackend))
    assert ours == theirs
    assert [kind for kind, _ in ours] == ["raised", "sent", "raised"]
    assert AnymailRecipientsRefused in ours[0][1]


def test_a_missing_api_key_raises_anymails_own_error_as_plain_anymail_does(
    settings: Any, fake_esp: FakeESP
) -> None:
    settings.ANYMAIL = {"MAILGUN_API_KEY": PLATFORM_KEY, "MAILGUN_SENDER_DOMAIN": "mg.example"}
    use_platform(settings, MAILGUN, api_url=fake_esp.mailgun_api_url)

    def run(backend: Callable[[], BaseEmailBackend]) -> list[tuple[str, Any]]:
        results = [outcome(lambda: backend().send_messages([msg()]))]
        with override_settings(ANYMAIL={"MAILGUN_SENDER_DOMAIN": "mg.example"}):
            results.append(outcome(lambda: backend().send_messages([msg()])))
        results.append(outcome(lambda: backend().send_messages([msg()])))
        return results

    ours = run(mailer)
    theirs = run(lambda: plain(MailgunBackend, api_url=fake_esp.mailgun_api_url))
    assert [kind for kind, _ in ours] == [kind for kind, _ in theirs] == ["sent", "raised", "sent"]
    assert AnymailConfigurationError in ours[1][1]
    assert TenantMailConfigurationError in ours[1][1]  # and it names where to fix it
    with (
        override_settings(ANYMAIL={"MAILGUN_SENDER_DOMAIN": "mg.example"}),
        pytest.raises(AnymailConfigurationError, match=r"(?i)api_key") as raised,
    ):
        mailer().send_messages([msg()])
    assert 'TENANTMAIL["DEFAULT"]' in str(raised.value)


def test_ses_session_and_client_params_changed_with_override_settings(settings: Any) -> None:
    pytest.importorskip("boto3")
    from anymail.backends.amazon_ses import EmailBackend as SESBackend

    use_platform(settings, SES)

    def calls(backend: Callable[[], BaseEmailBackend]) -> list[tuple[Any, Any]]:
        with mock.patch("boto3.session.Session") as session_class:
            client = session_class.return_value.client.return_value
            client.send_email.return_value = {"MessageId": "m1"}
            settings.ANYMAIL = {
                "AMAZON_SES_SESSION_PARAMS": {"profile_name": "one"},
                "AMAZON_SES_CLIENT_PARAMS": {"region_name": "eu-west-1"},
            }
            backend().send_messages([msg()])
            settings.ANYMAIL = {
                "AMAZON_SES_SESSION_PARAMS": {"profile_name": "two"},
                "AMAZON_SES_CLIENT_PARAMS": {"region_name": "us-east-1"},
            }
            backend().send_messages([msg()])
            return [
                (session.kwargs, client_call.kwargs.get("region_name"))
                for session, client_call in zip(
                    session_class.call_args_list,
                    session_class.return_value.client.call_args_list,
                    strict=True,
                )
            ]

    ours, theirs = calls(mailer), calls(lambda: plain(SESBackend))
    assert ours == theirs
    assert ours == [({"profile_name": "one"}, "eu-west-1"), ({"profile_name": "two"}, "us-east-1")]


# -- client classes patched after the first send ------------------------------------------------


def test_requests_session_patched_after_the_first_send_is_reached(
    settings: Any, fake_esp: FakeESP
) -> None:
    use_platform(
        settings,
        MAILGUN,
        api_key=PLATFORM_KEY,
        sender_domain="mg.example",
        api_url=fake_esp.mailgun_api_url,
    )
    mailer().send_messages([msg("real")])
    assert len(fake_esp.wait_for(1)) == 1

    with mock.patch("requests.Session") as session_class:
        response = session_class.return_value.request.return_value
        response.status_code = 200
        response.json.return_value = {"id": "<patched@mg.example>", "message": "Queued"}
        assert mailer().send_messages([msg("patched")]) == 1
    assert session_class.return_value.request.call_count == 1
    assert len(fake_esp.messages) == 1  # the patched session got it, not the pooled one

    mailer().send_messages([msg("real again")])
    assert [m.subject for m in fake_esp.wait_for(2)] == ["real", "real again"]


def test_smtplib_patched_after_the_first_send_is_reached(
    settings: Any, fake_smtp: FakeSMTP
) -> None:
    use_platform(settings, SMTP, host=fake_smtp.host, port=fake_smtp.port, timeout=5)
    mailer().send_messages([msg("real")])
    with mock.patch("smtplib.SMTP") as smtp_class:
        assert mailer().send_messages([msg("patched")]) == 1
    assert smtp_class.return_value.sendmail.call_count == 1
    assert [m.subject for m in fake_smtp.wait_for(1)] == ["real"]


# -- the inner backend's exceptions keep their type ---------------------------------------------


def test_an_esp_error_keeps_its_type_with_tenantmails_note(
    settings: Any, fake_esp: FakeESP
) -> None:
    use_platform(
        settings,
        MAILGUN,
        api_key=PLATFORM_KEY,
        sender_domain="mg.example",
        api_url=fake_esp.mailgun_api_url,
    )
    fake_esp.fail_next(500)
    with pytest.raises(AnymailAPIError) as raised:
        mailer().send_messages([msg()])
    assert isinstance(raised.value, requests.HTTPError)
    assert any(note.startswith("tenantmail: ") for note in raised.value.__notes__)


def test_an_smtp_error_keeps_its_type_with_tenantmails_note(settings: Any) -> None:
    with FakeSMTP(users={"platform": "right"}) as server:
        use_platform(
            settings,
            SMTP,
            host=server.host,
            port=server.port,
            username="platform",
            password="wrong",
            timeout=5,
        )
        with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
            mailer().send_messages([msg()])
    assert any(note.startswith("tenantmail: ") for note in raised.value.__notes__)


def test_a_platform_option_error_is_the_backends_own(settings: Any, fake_smtp: FakeSMTP) -> None:
    options = {"host": fake_smtp.host, "port": fake_smtp.port, "use_tls": True, "use_ssl": True}
    theirs = construction_error(SMTPBackend, **options)
    use_platform(settings, SMTP, **options)
    with pytest.raises(theirs) as raised:
        mailer().send_messages([msg()])
    text = "\n".join([str(raised.value), *raised.value.__notes__])
    assert 'TENANTMAIL["DEFAULT"]' in text


class StrictBackend(AnymailTestBackend):
    """A platform's own backend that validates its options (as many custom backends do)."""

    def __init__(self, *, level: int = 1, **kwargs: Any) -> None:
        if level not in (1, 2):
            raise ValueError("level must be 1 or 2")
        super().__init__(**kwargs)


def test_a_platform_backends_value_error_reaches_the_caller_as_is(settings: Any) -> None:
    use_platform(settings, f"{__name__}.StrictBackend", level=3)
    with pytest.raises(ValueError, match="level must be 1 or 2") as raised:
        mailer().send_messages([msg()])
    assert not isinstance(raised.value, TenantMailConfigurationError)
    assert any('TENANTMAIL["DEFAULT"]' in note for note in raised.value.__notes__)


def test_a_tenant_option_error_is_both_a_tenant_config_error_and_the_backends_own(
    tenants: Tenants,
) -> None:
    options = {**tenants.hooli.mail_options, "use_tls": True, "use_ssl": True}
    theirs = construction_error(SMTPBackend, **options)
    tenants.hooli.mail_options = options
    tenants.hooli.save()
    with pytest.raises(theirs) as raised:
        mailer(tenant="hooli").send_messages([msg()])
    assert isinstance(raised.value, TenantMailConfigurationError)
    assert (raised.value.tenant, raised.value.setting) == ("hooli", "mail_options")
    assert str(options["password"]) not in str(raised.value)
    # Still an ordinary exception to a queue or cache that pickles it (Celery, retry queues).
    copy = pickle.loads(pickle.dumps(raised.value))  # noqa: S301 - our own bytes
    assert type(copy) is type(raised.value)
    assert (copy.tenant, copy.setting, str(copy)) == ("hooli", "mail_options", str(raised.value))


def test_any_setting_change_forgets_pooled_backends_configs_and_tenant_rows(
    tenants: Tenants, fake_esp: FakeESP
) -> None:
    from tenantmail import config
    from tenantmail.tenancy import tenant_cache

    mailer(tenant="acme").send_messages([msg()])
    queries = tenant_cache.queries
    mailer(tenant="acme").send_messages([msg()])
    assert tenant_cache.queries == queries  # cached
    assert pool_module.stats().idle == 1
    with override_settings(SERVER_EMAIL="root@saas.example"):
        assert pool_module.stats().idle == 0
        assert not config._resolved._entries
        mailer(tenant="acme").send_messages([msg()])
        assert tenant_cache.queries == queries + 1
    assert pool_module.stats().idle == 0  # and again on the way out
    assert len(fake_esp.wait_for(3)) == 3


def test_a_platform_backend_that_cannot_be_imported_is_also_an_import_error(
    settings: Any,
) -> None:
    use_platform(settings, "tenantmail_nosuch.EmailBackend")
    with pytest.raises(ImportError) as raised:
        mailer().send_messages([msg()])
    assert isinstance(raised.value, TenantMailConfigurationError)
