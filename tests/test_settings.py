"""Parsing settings.TENANTMAIL: every key optional, every malformed value named precisely."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.signals import setting_changed
from django.test import override_settings

from tenantmail import pool as pool_module
from tenantmail.conf import PlatformDefault, TenantMailSettings, get_settings, load_settings
from tenantmail.exceptions import TenantMailConfigurationError

SMTP = "django.core.mail.backends.smtp.EmailBackend"
MAILGUN = "anymail.backends.mailgun.EmailBackend"
POSTMARK = "anymail.backends.postmark.EmailBackend"
SENDGRID = "anymail.backends.sendgrid.EmailBackend"


@contextmanager
def malformed_tenantmail(value: Any) -> Iterator[None]:
    """``override_settings(TENANTMAIL=value)`` for a value that does not parse.

    Works around the bug shown by test_malformed_setting_can_be_assigned_in_tests: the pool's
    setting_changed receiver parses the new value and raises, aborting override_settings.
    """
    setting_changed.disconnect(pool_module._resize_on_setting_changed)
    try:
        with override_settings(TENANTMAIL=value):
            yield
    finally:
        setting_changed.connect(pool_module._resize_on_setting_changed)


def loaded(settings: Any, value: Any) -> TenantMailSettings:
    settings.TENANTMAIL = value
    return load_settings()


def test_every_key_has_a_default(settings: Any) -> None:
    del settings.TENANTMAIL
    parsed = load_settings()
    assert parsed == TenantMailSettings()
    assert parsed.default == PlatformDefault(backend=SMTP, options={}, mailer_alias=None)
    assert parsed.encryption_keys == ()
    assert len(parsed.allowed_backends) == 18  # 15 Anymail/SMTP + 3 sub-account backends
    assert {SMTP, MAILGUN, POSTMARK, "anymail.backends.amazon_ses.EmailBackend"} <= (
        parsed.allowed_backends
    )
    assert "django.core.mail.backends.filebased.EmailBackend" not in parsed.allowed_backends
    assert parsed.required_options[MAILGUN] == ("api_key",)
    assert parsed.required_options[POSTMARK] == ("server_token",)
    assert parsed.required_options[SMTP] == ("host",)
    assert parsed.required_options["anymail.backends.mailjet.EmailBackend"] == (
        "api_key",
        "secret_key",
    )
    assert parsed.required_options["anymail.backends.amazon_ses.EmailBackend"] == (
        "session_params",
    )
    assert parsed.missing_config == "default"
    assert parsed.max_connections == 256
    assert parsed.idle_timeout == 60.0
    assert parsed.tenant_cache_seconds == 5.0
    assert parsed.metadata_key == "tenant"


def test_empty_dict_is_all_defaults(settings: Any) -> None:
    assert loaded(settings, {}) == TenantMailSettings()


def test_short_backend_names_are_expanded(settings: Any) -> None:
    parsed = loaded(
        settings,
        {
            "DEFAULT": {"BACKEND": "postmark", "OPTIONS": {"server_token": "x"}},
            "ALLOWED_BACKENDS": ["mailgun", "smtp", "myapp.mail.EmailBackend"],
            "REQUIRED_OPTIONS": {"sendgrid": ["api_key", "ip_pool"], "myapp.mail.EmailBackend": []},
        },
    )
    assert parsed.default == PlatformDefault(backend=POSTMARK, options={"server_token": "x"})
    assert parsed.allowed_backends == frozenset({MAILGUN, SMTP, "myapp.mail.EmailBackend"})
    assert parsed.required_options[SENDGRID] == ("api_key", "ip_pool")
    assert parsed.required_options["myapp.mail.EmailBackend"] == ()
    assert parsed.required_options[MAILGUN] == ("api_key",)  # built-ins kept


def test_values_of_every_accepted_form(settings: Any) -> None:
    parsed = loaded(
        settings,
        {
            "DEFAULT": "platform",
            "ENCRYPTION_KEYS": ("k1", "k2"),
            "ALLOWED_BACKENDS": {"mailgun"},
            "MISSING_CONFIG": "raise",
            "MAX_CONNECTIONS": 3.9,
            "IDLE_TIMEOUT": 0,
            "TENANT_CACHE_SECONDS": 0.5,
            "METADATA_KEY": None,
        },
    )
    assert parsed.default == PlatformDefault(backend=None, options={}, mailer_alias="platform")
    assert parsed.encryption_keys == ("k1", "k2")
    assert parsed.allowed_backends == frozenset({MAILGUN})
    assert parsed.missing_config == "raise"
    assert parsed.max_connections == 3
    assert (parsed.idle_timeout, parsed.tenant_cache_seconds) == (0, 0.5)
    assert parsed.metadata_key is None
    # DEFAULT without BACKEND is Django's SMTP backend.
    assert loaded(settings, {"DEFAULT": {"OPTIONS": {"host": "h"}}}).default == PlatformDefault(
        backend=SMTP, options={"host": "h"}
    )


@pytest.mark.parametrize(
    ("value", "setting"),
    [
        (["DEFAULT"], "TENANTMAIL"),
        ({"DEFAULTS": {}}, "TENANTMAIL"),
        ({"DEFAULT": 42}, 'TENANTMAIL["DEFAULT"]'),
        ({"DEFAULT": {"BACKEND": "smtp", "HOST": "x"}}, 'TENANTMAIL["DEFAULT"]'),
        ({"DEFAULT": {"BACKEND": ""}}, 'TENANTMAIL["DEFAULT"]'),
        ({"DEFAULT": {"BACKEND": 3}}, 'TENANTMAIL["DEFAULT"]'),
        ({"DEFAULT": {"BACKEND": "smtp", "OPTIONS": ["host"]}}, 'TENANTMAIL["DEFAULT"]'),
        ({"ENCRYPTION_KEYS": "one-key"}, 'TENANTMAIL["ENCRYPTION_KEYS"]'),
        ({"ENCRYPTION_KEYS": 5}, 'TENANTMAIL["ENCRYPTION_KEYS"]'),
        ({"ENCRYPTION_KEYS": ["k", ""]}, 'TENANTMAIL["ENCRYPTION_KEYS"]'),
        ({"ENCRYPTION_KEYS": ["k", b"k"]}, 'TENANTMAIL["ENCRYPTION_KEYS"]'),
        ({"ALLOWED_BACKENDS": "mailgun"}, 'TENANTMAIL["ALLOWED_BACKENDS"]'),
        ({"ALLOWED_BACKENDS": 5}, 'TENANTMAIL["ALLOWED_BACKENDS"]'),
        ({"REQUIRED_OPTIONS": ["mailgun"]}, 'TENANTMAIL["REQUIRED_OPTIONS"]'),
        ({"REQUIRED_OPTIONS": {"mailgun": "api_key"}}, 'TENANTMAIL["REQUIRED_OPTIONS"]'),
        ({"REQUIRED_OPTIONS": {"mailgun": 5}}, 'TENANTMAIL["REQUIRED_OPTIONS"]'),
        ({"MISSING_CONFIG": "ignore"}, 'TENANTMAIL["MISSING_CONFIG"]'),
        ({"MISSING_CONFIG": None}, 'TENANTMAIL["MISSING_CONFIG"]'),
        ({"METADATA_KEY": ""}, 'TENANTMAIL["METADATA_KEY"]'),
        ({"METADATA_KEY": 5}, 'TENANTMAIL["METADATA_KEY"]'),
        ({"MAX_CONNECTIONS": 0}, 'TENANTMAIL["MAX_CONNECTIONS"]'),
        ({"MAX_CONNECTIONS": True}, 'TENANTMAIL["MAX_CONNECTIONS"]'),
        ({"MAX_CONNECTIONS": "10"}, 'TENANTMAIL["MAX_CONNECTIONS"]'),
        ({"IDLE_TIMEOUT": -1}, 'TENANTMAIL["IDLE_TIMEOUT"]'),
        ({"IDLE_TIMEOUT": None}, 'TENANTMAIL["IDLE_TIMEOUT"]'),
        ({"TENANT_CACHE_SECONDS": "5"}, 'TENANTMAIL["TENANT_CACHE_SECONDS"]'),
        ({"TENANT_CACHE_SECONDS": -0.1}, 'TENANTMAIL["TENANT_CACHE_SECONDS"]'),
    ],
)
def test_malformed_value_names_the_key(value: Any, setting: str) -> None:
    with malformed_tenantmail(value), pytest.raises(TenantMailConfigurationError) as excinfo:
        load_settings()
    assert excinfo.value.setting == setting
    assert excinfo.value.tenant is None
    assert str(excinfo.value).startswith(f"{setting}: ")


def test_unknown_keys_are_listed() -> None:
    value = {"DEFAULT": {}, "ENCRYPTION_KEY": ["k"], "MAX_CONNECTION": 1}
    with (
        malformed_tenantmail(value),
        pytest.raises(TenantMailConfigurationError, match=r"unknown keys") as excinfo,
    ):
        load_settings()
    assert "['ENCRYPTION_KEY', 'MAX_CONNECTION']" in str(excinfo.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_CONNECTIONS", math.inf),
        ("MAX_CONNECTIONS", math.nan),
        ("IDLE_TIMEOUT", math.nan),
        ("TENANT_CACHE_SECONDS", math.nan),
    ],
)
def test_non_finite_numbers_name_the_key(key: str, value: float) -> None:
    with malformed_tenantmail({key: value}), pytest.raises(TenantMailConfigurationError) as excinfo:
        load_settings()
    assert excinfo.value.setting == f'TENANTMAIL["{key}"]'


def test_setting_changed_resets_the_cache(settings: Any) -> None:
    first = get_settings()
    assert get_settings() is first  # cached
    settings.DEBUG = not settings.DEBUG  # an unrelated setting keeps the cache
    assert get_settings() is first
    settings.TENANTMAIL = {**settings.TENANTMAIL, "MAX_CONNECTIONS": 7, "METADATA_KEY": "schema"}
    changed = get_settings()
    assert changed is not first
    assert (changed.max_connections, changed.metadata_key) == (7, "schema")
    # The live pool follows the new bounds too.
    assert pool_module.get_pool().max_connections == 7


def test_malformed_setting_can_be_assigned_in_tests(settings: Any) -> None:
    pool_module.get_pool()
    settings.TENANTMAIL = {"MISSING_CONFIG": "sometimes"}
    with pytest.raises(TenantMailConfigurationError):
        load_settings()
