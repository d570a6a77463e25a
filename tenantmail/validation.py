"""Validation of tenant-supplied mail settings.

Tenant data is not trusted like settings are: a tenant admin may type anything into their own
``mail_options`` / ``mail_defaults``. Every check here raises
:class:`~tenantmail.exceptions.TenantMailConfigurationError` naming the tenant and the setting,
and never quotes a value (it may be a credential).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from django.views.decorators.debug import sensitive_variables

from .exceptions import TenantMailConfigurationError
from .masking import PUBLIC_OPTION_NAMES

#: Types of well-known options, checked before a backend sees them (a string port fails deep
#: inside smtplib, mid-send, with a message that names neither the tenant nor the option).
OPTION_TYPES: Mapping[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "username": str,
    "password": str,
    "use_tls": bool,
    "use_ssl": bool,
    "timeout": (int, float),
    "requests_timeout": (int, float),
    "api_key": str,
    "api_token": str,
    "api_url": str,
    "secret_key": str,
    "server_token": str,
    "sender_domain": str,
    "project_id": str,
    "session_params": dict,
    "client_params": dict,
}

#: C0 and C1 controls, DEL and the Unicode line/paragraph separators: every character Python's
#: ``str.splitlines()`` (and so the email package's header handling) treats as a line break --
#: ``\n \r \x0b \x0c \x1c \x1d \x1e \x85 \u2028 \u2029`` -- plus NUL. None belongs in an option.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: The same, less TAB (legal folding whitespace): refused in defaults that reach headers.
_HEADER_BREAKS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")

#: No tenant-supplied string (option or default) may be longer than this.
MAX_VALUE_LENGTH = 4096

#: Backend options a tenant may never set, and why. Tenant data is not trusted like settings are.
FORBIDDEN_TENANT_OPTIONS: Mapping[str, str] = {
    "alias": "tenantmail sets the alias itself",
    "fail_silently": "it is a property of the call, not of the account",
    # Anymail imports a dotted-path IDNA_ENCODER and calls it on every domain: code execution.
    "idna_encoder": "a dotted path here would run platform code chosen by the tenant",
    # Anymail then prints whole API requests, Authorization header included, to stdout.
    "debug_api_requests": "it prints credentials to the server's logs",
    # Paths on the platform's disk (its private key, say) are not the tenant's to name.
    "ssl_keyfile": "it names a file on the platform's servers",
    "ssl_certfile": "it names a file on the platform's servers",
    # Anymail applies it to every message as attributes: bcc, from_email, esp_extra, metadata ...
    "send_defaults": "it sets arbitrary message attributes (bcc, ...); use mail_defaults",
}

#: Valid TCP ports (0 would make Django's SMTP backend before 6.1 use EMAIL_PORT).
_PORTS = range(1, 65536)

#: What ``mail_defaults`` may contain, and the type each value must have.
DEFAULT_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "from_email": str,
    "reply_to": (str, list),
    "headers": dict,
    "tags": list,
    "metadata": dict,
    "esp_extra": dict,
    "track_opens": bool,
    "track_clicks": bool,
}


@sensitive_variables()
def check_options(options: Mapping[str, Any], schema: str) -> None:
    """A tenant's ``mail_options``: names, types, sizes and characters -- named, never quoted."""
    bad_names = [name for name in options if not isinstance(name, str) or not name.isidentifier()]
    if bad_names:
        raise TenantMailConfigurationError(
            "option names must be the backend's keyword arguments (identifiers)",
            tenant=schema,
            setting="mail_options",
        )
    forbidden = sorted(set(options) & FORBIDDEN_TENANT_OPTIONS.keys())
    if forbidden:
        name = forbidden[0]
        raise TenantMailConfigurationError(
            f"option {name!r} may not be set by a tenant: {FORBIDDEN_TENANT_OPTIONS[name]}",
            tenant=schema,
            setting="mail_options",
        )
    for name, value in options.items():
        expected = OPTION_TYPES.get(name)
        if expected is not None and value is not None and not _is_type(value, expected):
            raise TenantMailConfigurationError(
                f"option {name!r} must be {_type_names(expected)}, got {type(value).__name__}",
                tenant=schema,
                setting="mail_options",
            )
        if name == "port" and isinstance(value, int) and value not in _PORTS:
            raise TenantMailConfigurationError(
                "option 'port' must be between 1 and 65535", tenant=schema, setting="mail_options"
            )
        for text in _strings(value):
            problem = _bad_text(text, secret=name not in PUBLIC_OPTION_NAMES)
            if problem:
                raise TenantMailConfigurationError(
                    f"option {name!r} {problem}", tenant=schema, setting="mail_options"
                )


def refuse_nulls(options: Mapping[str, Any], schema: str) -> None:
    """A ``null`` option would mean "the platform's setting" to Django (before 6.1) and to Anymail
    for ``username``/``password``, and crash others (``api_url``); refuse it, by name."""
    nulls = sorted(name for name, value in options.items() if value is None)
    if nulls:
        raise TenantMailConfigurationError(
            f"option {nulls[0]!r} is null; remove it to use the backend's default, or set a value",
            tenant=schema,
            setting="mail_options",
        )


def _is_type(value: object, expected: type | tuple[type, ...]) -> bool:
    # bool is an int to Python, but `"port": true` is a mistake, not a port.
    if isinstance(value, bool) and bool not in (
        expected if isinstance(expected, tuple) else (expected,)
    ):
        return False
    return isinstance(value, expected)


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _bad_text(text: str, *, secret: bool) -> str | None:
    if len(text) > MAX_VALUE_LENGTH:
        return f"is longer than {MAX_VALUE_LENGTH} characters"
    if _CONTROL_CHARACTERS.search(text):
        return "contains control characters (line breaks, NUL, ...)"
    if secret and not text.isascii():
        # ESP keys are ASCII; requests/smtplib would fail on anything else mid-send.
        return "must be ASCII"
    return None


def check_defaults(defaults: object, tenant: str) -> Mapping[str, Any]:
    """``mail_defaults``: a JSON object of known keys, right types, no header injection."""
    if not isinstance(defaults, Mapping):
        raise TenantMailConfigurationError(
            f"must be a JSON object, got {type(defaults).__name__}",
            tenant=tenant,
            setting="mail_defaults",
        )
    for name, value in defaults.items():
        expected = DEFAULT_FIELDS.get(name)
        if expected is None:
            raise TenantMailConfigurationError(
                f"unknown key {name!r}; allowed keys are {sorted(DEFAULT_FIELDS)}",
                tenant=tenant,
                setting="mail_defaults",
            )
        if not isinstance(value, expected):
            raise TenantMailConfigurationError(
                f"{name!r} has the wrong type {type(value).__name__}",
                tenant=tenant,
                setting="mail_defaults",
            )
        _check_default_text(name, value, tenant)
    return defaults


#: Defaults that end up in message headers. (Metadata reaches headers only JSON-encoded, which
#: escapes every line break, so it may hold multi-line text.)
HEADER_DEFAULTS = frozenset({"from_email", "reply_to", "headers", "tags"})

#: Headers that carry the tenant trace or ESP metadata: a tenant default naming one could attribute
#: its events to another tenant (SES and Resend read the *first* X-Metadata header).
TRACE_HEADERS = frozenset(
    {
        "x-metadata",
        "x-mailgun-variables",
        "x-mailin-custom",
        "x-smtpapi",
        "x-mc-metadata",
        "x-msys-api",
        "x-pm-metadata",
    }
)


def _check_default_text(name: str, value: object, tenant: str) -> None:
    for text in _strings(value):
        if len(text) > MAX_VALUE_LENGTH:
            problem = f"{name!r} has a value longer than {MAX_VALUE_LENGTH} characters"
        elif name in HEADER_DEFAULTS and _HEADER_BREAKS.search(text):
            # Header injection: refused here, by name, rather than left to each backend's
            # (differing) handling -- every separator the email package splits lines on, not
            # only CR/LF.
            problem = f"{name!r} contains a line break (header injection)"
        else:
            continue
        raise TenantMailConfigurationError(problem, tenant=tenant, setting="mail_defaults")
    if name == "headers" and isinstance(value, Mapping):
        for header in value:
            lowered = str(header).lower()
            if lowered in TRACE_HEADERS or lowered.startswith("x-pm-metadata-"):
                raise TenantMailConfigurationError(
                    f"header {header!r} carries the tenant trace/ESP metadata and is set by "
                    "tenantmail; use 'metadata' for your own values",
                    tenant=tenant,
                    setting="mail_defaults",
                )


#: ``esp_extra`` keys (compared case-insensitively) that would overwrite what tenantmail stamps
#: -- the metadata that carries the tenant trace -- or what only the platform may choose: the
#: sending identity and credentials. Anymail merges esp_extra into the ESP's payload *after* the
#: message's own fields, so these would win over the trace.
TRACE_ESP_EXTRA: Mapping[str, str] = {
    "metadata": "Postmark/SparkPost/Mandrill metadata",
    "custom_args": "SendGrid metadata",
    "personalizations": "SendGrid per-recipient metadata",
    "recipient-variables": "Mailgun per-recipient metadata",
    "h:x-mailgun-variables": "Mailgun metadata",
    "headers": "headers carrying metadata (Brevo, Resend); use mail_defaults 'headers'",
    "additional_headers": "Scaleway metadata header",
    "globals": "Mailjet metadata (EventPayload)",
    "messages": "Mailjet metadata (EventPayload)",
    "eventpayload": "Mailjet metadata",
    "custom_variables": "Mailtrap metadata",
    "recipients": "SparkPost per-recipient metadata",
    "messageversions": "Brevo per-recipient headers",
    "message": "Mandrill/Unisender Go metadata",
    "content": "Amazon SES raw message (with its X-Metadata header)",
    "defaultcontent": "Amazon SES message content",
    "bulkemailentries": "Amazon SES per-recipient content",
}
PLATFORM_ESP_EXTRA: Mapping[str, str] = {
    # Set by the platform, never by a tenant. A platform-set sub-account identifier (SES
    # TenantName, ...) goes into the MailConfig by tenantmail itself, after these checks.
    "tenantname": "Amazon SES TenantName is set by the platform",
    "sender_domain": "the sending domain belongs in mail_options, on the tenant's own account",
    "from": "use mail_defaults 'from_email'",
    "fromemailaddress": "use mail_defaults 'from_email'",
    "sender": "use mail_defaults 'from_email'",
    "fromemailaddressidentityarn": "the sending identity belongs to the account",
    "server_token": "credentials belong in mail_options (encrypted)",
    "api_token": "credentials belong in mail_options (encrypted)",
    "api_key": "credentials belong in mail_options (encrypted)",
}


def check_esp_extra(defaults: Mapping[str, Any], *, own_account: bool, tenant: str) -> None:
    """``mail_defaults['esp_extra']``, once it is known whose account the tenant sends with.

    On the platform's account none at all: a single key (Mailgun ``sender_domain``, SES
    ``FromEmailAddressIdentityArn``, ...) could borrow another tenant's domain with the platform's
    key, and the payload keys of every ESP are too many to vet. On its own account a tenant may
    pass ESP options, except keys that would overwrite the trace or platform-owned values.
    """
    extra = defaults.get("esp_extra")
    if not extra:
        return
    if not own_account:
        raise TenantMailConfigurationError(
            "'esp_extra' needs the tenant's own account: on the platform's account it could "
            "choose the sender domain or identity (another tenant's); set mail_backend and "
            "mail_options, or remove esp_extra",
            tenant=tenant,
            setting="mail_defaults",
        )
    for key in extra:
        lowered = str(key).lower()
        why = TRACE_ESP_EXTRA.get(lowered) or PLATFORM_ESP_EXTRA.get(lowered)
        if why is None and lowered.startswith("v:"):
            why = "Mailgun metadata (v:); use mail_defaults 'metadata'"
        if why is not None:
            raise TenantMailConfigurationError(
                f"'esp_extra' may not set {key!r} ({why}): tenantmail stamps it, or the "
                "platform owns it",
                tenant=tenant,
                setting="mail_defaults",
            )
