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

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

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
}

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
        for text in _strings(value):
            problem = _bad_text(text, secret=name not in PUBLIC_OPTION_NAMES)
            if problem:
                raise TenantMailConfigurationError(
                    f"option {name!r} {problem}", tenant=schema, setting="mail_options"
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


#: Defaults that end up in message headers.
HEADER_DEFAULTS = frozenset({"from_email", "reply_to", "headers", "tags"})


def _check_default_text(name: str, value: object, tenant: str) -> None:
    for text in _strings(value):
        if len(text) > MAX_VALUE_LENGTH:
            problem = f"{name!r} has a value longer than {MAX_VALUE_LENGTH} characters"
        elif name in HEADER_DEFAULTS and ("\n" in text or "\r" in text):
            # Header injection: refused here, by name, rather than left to each backend's
            # (differing) handling.
            problem = f"{name!r} contains a line break (header injection)"
        else:
            continue
        raise TenantMailConfigurationError(problem, tenant=tenant, setting="mail_defaults")
