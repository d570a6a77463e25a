"""System checks: each ID fires in its situation, and only there."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.checks import Error, Warning, run_checks
from django.core.mail import EmailMessage
from django.utils.log import AdminEmailHandler

from tenantmail.backends import TenantBackend
from tenantmail.checks import check_settings
from tenantmail.factory import HAS_MAILERS
from tests.test_settings import malformed_tenantmail

TENANT_BACKEND = "tenantmail.backends.TenantBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"
ADMIN_HANDLER = "django.utils.log.AdminEmailHandler"


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def with_logging(settings: Any, **handlers: dict[str, Any]) -> None:
    settings.LOGGING = {"version": 1, "disable_existing_loggers": False, "handlers": handlers}


def test_valid_settings_pass(settings: Any) -> None:
    assert check_settings() == []
    assert run_checks(tags=["tenantmail"]) == []


def test_checks_are_registered_under_the_tenantmail_tag(settings: Any) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ENCRYPTION_KEYS": ["not-a-key"]}
    assert ids(run_checks(tags=["tenantmail"])) == ["tenantmail.E002"]


# -- E001 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "setting"),
    [
        ({"MISSING_CONFIG": "sometimes"}, 'TENANTMAIL["MISSING_CONFIG"]'),
        ({"NO_SUCH_KEY": 1}, "TENANTMAIL"),
        ("mailgun", "TENANTMAIL"),
    ],
)
def test_e001_malformed_setting(value: Any, setting: str) -> None:
    with malformed_tenantmail(value):
        messages = check_settings()
        assert messages == run_checks(tags=["tenantmail"])
    # One error: the other checks run on the rest, and find nothing more.
    (error,) = messages
    assert isinstance(error, Error)
    assert error.id == "tenantmail.E001"
    assert error.msg.startswith(f"{setting}: ")


def test_every_settings_problem_is_reported_in_one_run(settings: Any) -> None:
    # Observed: the first malformed key hid every other problem until it was fixed.
    good = settings.TENANTMAIL["ENCRYPTION_KEYS"][0]
    with malformed_tenantmail(
        {
            "MISSING_CONFIG": "sometimes",
            "METADATA_KEY": "",
            "MAX_CONNECTIONS": 0,
            "ENCRYPTION_KEYS": ["bad-key-one", good, "bad-key-two"],
            "DEFAULT": {"BACKEND": TENANT_BACKEND},
        }
    ):
        messages = check_settings()
    found = [(m.id, m.msg.split(":")[0]) for m in messages]
    assert found == [
        ("tenantmail.E001", 'TENANTMAIL["MISSING_CONFIG"]'),
        ("tenantmail.E001", 'TENANTMAIL["MAX_CONNECTIONS"]'),
        ("tenantmail.E001", 'TENANTMAIL["METADATA_KEY"]'),
        ("tenantmail.E002", 'TENANTMAIL["ENCRYPTION_KEYS"][0]'),
        ("tenantmail.E002", 'TENANTMAIL["ENCRYPTION_KEYS"][2]'),
        ("tenantmail.E003", 'TENANTMAIL["DEFAULT"]'),
    ]
    assert not any("bad-key" in m.msg for m in messages)


# -- E002 ----------------------------------------------------------------------------------


def test_e002_invalid_encryption_key(settings: Any) -> None:
    canary = "not-a-fernet-key-e002-canary-55"
    good = settings.TENANTMAIL["ENCRYPTION_KEYS"][0]
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ENCRYPTION_KEYS": [good, canary]}
    (error,) = check_settings()
    assert isinstance(error, Error)
    assert error.id == "tenantmail.E002"
    assert error.msg.startswith('TENANTMAIL["ENCRYPTION_KEYS"][1]: is not a valid Fernet key')
    assert canary not in error.msg


@pytest.mark.parametrize("keys", [[], ["xiIWGnBVUb5If1g5m3r5Q1-aVuBHTMzjvgKqPewGFEw="]])
def test_e002_not_raised_for_good_or_derived_keys(settings: Any, keys: list[str]) -> None:
    settings.TENANTMAIL = {**settings.TENANTMAIL, "ENCRYPTION_KEYS": keys}
    assert check_settings() == []


# -- E003 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "problem"),
    [
        ({"BACKEND": TENANT_BACKEND}, "TenantBackend itself"),
        ("nosuch", "names the mailer 'nosuch', which is not in settings.MAILERS"),
        ("loop", "names the mailer 'loop', which is a TenantBackend"),
    ],
)
def test_e003_unusable_platform_default(settings: Any, default: Any, problem: str) -> None:
    settings.MAILERS = {**getattr(settings, "MAILERS", {}), "loop": {"BACKEND": TENANT_BACKEND}}
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": default}
    (error,) = check_settings()
    assert isinstance(error, Error)
    assert error.id == "tenantmail.E003"
    assert error.msg.startswith('TENANTMAIL["DEFAULT"]: ')
    assert problem in error.msg


def test_e003_not_raised_for_a_real_mailers_alias(settings: Any) -> None:
    settings.MAILERS = {**getattr(settings, "MAILERS", {}), "platform": {"BACKEND": SMTP}}
    settings.TENANTMAIL = {**settings.TENANTMAIL, "DEFAULT": "platform"}
    assert check_settings() == []


# -- W001 ----------------------------------------------------------------------------------


def test_w001_tenant_model_without_the_mixin(settings: Any) -> None:
    settings.TENANT_MODEL = "auth.User"
    (warning,) = check_settings()
    assert isinstance(warning, Warning)
    assert warning.id == "tenantmail.W001"
    assert warning.msg.startswith("auth.User does not inherit TenantMailMixin")
    assert "TenantMailMixin" in (warning.hint or "")


@pytest.mark.parametrize("label", ["tenants_app.Client", "nosuch.Model", "not-a-label", None])
def test_w001_not_raised_otherwise(settings: Any, label: str | None) -> None:
    # A missing or unknown TENANT_MODEL is django-tenants' to report, not ours.
    if label is None:
        del settings.TENANT_MODEL
    else:
        settings.TENANT_MODEL = label
    assert check_settings() == []


# -- W002 ----------------------------------------------------------------------------------


def test_w002_allowed_backend_that_cannot_be_used(settings: Any) -> None:
    settings.TENANTMAIL = {
        **settings.TENANTMAIL,
        "ALLOWED_BACKENDS": ["mailgun", "tenantmail_nosuch.EmailBackend", "os.path.join"],
    }
    warnings = check_settings()
    assert ids(warnings) == ["tenantmail.W002", "tenantmail.W002"]
    assert all(isinstance(w, Warning) for w in warnings)
    first, second = (w.msg for w in warnings)  # sorted by path
    assert first.startswith('TENANTMAIL["ALLOWED_BACKENDS"]: ')
    assert "'os.path.join' is not a Django email backend" in first
    assert "cannot import 'tenantmail_nosuch.EmailBackend'" in second


@pytest.mark.parametrize("allowed", [None, [], ["mailgun", "postmark", "smtp"]])
def test_w002_not_raised_for_importable_backends(settings: Any, allowed: Any) -> None:
    tenantmail = {k: v for k, v in settings.TENANTMAIL.items() if k != "ALLOWED_BACKENDS"}
    if allowed is not None:
        tenantmail["ALLOWED_BACKENDS"] = allowed
    settings.TENANTMAIL = tenantmail
    assert check_settings() == []


# -- W003 ----------------------------------------------------------------------------------
# Changing LOGGING makes Django configure it, so each handler must be valid for the Django
# version: "using" needs MAILERS (6.1+), "email_backend" needs MAILERS to be absent.

needs_mailers = pytest.mark.skipif(not HAS_MAILERS, reason="'using' needs Django 6.1 MAILERS")
ignore_email_deprecations = pytest.mark.filterwarnings(
    "ignore:The EMAIL_BACKEND setting is deprecated",
    "ignore:The 'email_backend' argument is deprecated",
)


def without_mailers(settings: Any, email_backend: str) -> None:
    if hasattr(settings, "MAILERS"):
        del settings.MAILERS
    settings.EMAIL_BACKEND = email_backend


def w003_for(settings: Any, handler: dict[str, Any]) -> list[Any]:
    with_logging(settings, null={"class": "logging.NullHandler"}, mail_admins=handler)
    return check_settings()


class CustomAdminHandler(AdminEmailHandler):
    """Sends its own kind of mail: TenantBackend cannot recognise it as Django's server mail."""

    def send_mail(self, subject: str, message: str, *args: Any, **kwargs: Any) -> None:
        EmailMessage(subject, message, to=["oncall@saas.example"]).send()


CUSTOM_HANDLER = f"{__name__}.CustomAdminHandler"


@needs_mailers
def test_w003_custom_admin_mail_through_the_default_mailer(settings: Any) -> None:
    for handler in ({"class": CUSTOM_HANDLER}, {"class": CUSTOM_HANDLER, "using": "default"}):
        (warning,) = w003_for(settings, handler)
        assert isinstance(warning, Warning)
        assert warning.id == "tenantmail.W003"
        assert warning.msg.startswith("LOGGING handler 'mail_admins' (tests.test_checks.")
        assert "'using': 'admin'" in (warning.hint or "")


@needs_mailers
def test_w003_not_raised_for_a_platform_mailer(settings: Any) -> None:
    assert w003_for(settings, {"class": CUSTOM_HANDLER, "using": "admin"}) == []
    settings.MAILERS = {"default": {"BACKEND": SMTP}}
    assert w003_for(settings, {"class": CUSTOM_HANDLER}) == []
    assert w003_for(settings, {"class": CUSTOM_HANDLER, "using": "default"}) == []


@ignore_email_deprecations
def test_w003_follows_email_backend_without_mailers(settings: Any) -> None:
    without_mailers(settings, TENANT_BACKEND)
    assert ids(w003_for(settings, {"class": CUSTOM_HANDLER})) == ["tenantmail.W003"]
    assert w003_for(settings, {"class": CUSTOM_HANDLER, "email_backend": SMTP}) == []
    without_mailers(settings, SMTP)
    assert w003_for(settings, {"class": CUSTOM_HANDLER}) == []
    handler = {"class": CUSTOM_HANDLER, "email_backend": TENANT_BACKEND}
    assert ids(w003_for(settings, handler)) == ["tenantmail.W003"]


def test_w003_not_raised_for_other_handlers_or_no_logging(settings: Any) -> None:
    assert w003_for(settings, {"class": "logging.StreamHandler"}) == []
    settings.LOGGING = None
    assert check_settings() == []


def test_w003_not_raised_for_djangos_own_admin_handler(settings: Any) -> None:
    """Django's AdminEmailHandler -- DEFAULT_LOGGING's, live on the ``django`` logger in this
    very process, or configured in LOGGING -- sends server mail, which TenantBackend always
    sends as platform mail (tests/test_platform_mail.py)."""
    handlers = logging.getLogger("django").handlers
    assert any(type(h) is AdminEmailHandler for h in handlers)  # DEFAULT_LOGGING's, live
    assert w003_for(settings, {"class": ADMIN_HANDLER}) == []
    settings.LOGGING = None
    assert check_settings() == []


def test_w003_sees_live_handlers_not_only_the_logging_setting(settings: Any) -> None:
    settings.LOGGING = None
    logger = logging.getLogger("django.security")
    handler = CustomAdminHandler()
    logger.addHandler(handler)
    try:
        assert ids(check_settings()) == ["tenantmail.W003"]
    finally:
        logger.removeHandler(handler)


@needs_mailers
def test_w003_admin_mail_through_another_tenant_alias(settings: Any) -> None:
    settings.MAILERS = {
        "default": {"BACKEND": SMTP},
        "tenants": {"BACKEND": TENANT_BACKEND},
    }
    assert ids(w003_for(settings, {"class": CUSTOM_HANDLER, "using": "tenants"})) == [
        "tenantmail.W003"
    ]


class TenantBackendSubclass(TenantBackend):
    pass


def test_w003_follows_tenant_backend_subclasses_and_ignores_unimportable_routes(
    settings: Any,
) -> None:
    subclass = f"{__name__}.TenantBackendSubclass"
    if HAS_MAILERS:
        settings.MAILERS = {"default": {"BACKEND": SMTP}, "tenants": {"BACKEND": subclass}}
        assert ids(w003_for(settings, {"class": CUSTOM_HANDLER, "using": "tenants"})) == [
            "tenantmail.W003"
        ]
        settings.MAILERS = {"default": {"BACKEND": SMTP}, "x": {"BACKEND": "no.such.Backend"}}
        assert w003_for(settings, {"class": CUSTOM_HANDLER, "using": "x"}) == []
    else:
        without_mailers(settings, subclass)
        assert ids(w003_for(settings, {"class": CUSTOM_HANDLER})) == ["tenantmail.W003"]
        without_mailers(settings, "no.such.EmailBackend")
        assert w003_for(settings, {"class": CUSTOM_HANDLER}) == []
