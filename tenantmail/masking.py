"""Masking of secrets wherever a person might look: repr, str, logs, error messages.

Option values are masked unless their name is known to be harmless (a host, a URL, a domain):
a deny-list of "secret-looking" names would miss the next ESP's ``access_token``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Option names whose values are shown in clear (in repr and admin), because they help debugging
#: and grant nothing. Everything else is masked, recursively.
PUBLIC_OPTION_NAMES = frozenset(
    {
        "host",
        "port",
        "username",
        "use_tls",
        "use_ssl",
        "timeout",
        "api_url",
        "endpoint_url",
        "sender_domain",
        "region_name",
        "configuration_set_name",
        "message_tag_name",
        "project_id",
        "requests_timeout",
        "ignore_unsupported_features",
        "ignore_recipient_status",
        "debug_api_requests",
        "generate_message_id",
        # ESP sub-account identifiers (tenantmail.esp): names, not credentials.
        "subaccount",
        "subaccount_id",
        "tenant_name",
    }
)


def mask(secret: object) -> str:
    """``"…4f2a"``: the last 4 characters of a secret of 16 or more, enough to tell two keys apart
    (a prefix such as ``key-`` would only add known characters and shorten the unknown part)."""
    text = str(secret)
    if len(text) >= 16:
        return f"…{text[-4:]}"
    return "****"


def masked(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` that is safe to print."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, Mapping):
            out[name] = masked(value)
        elif name in PUBLIC_OPTION_NAMES or value is None or isinstance(value, bool):
            out[name] = value
        else:
            out[name] = mask(value)
    return out


class SecretDict(dict[str, Any]):
    """A dict whose repr/str never shows secret values.

    Decrypted ``mail_options`` are handed around as this type, so a tenant instance that ends up
    in a traceback, a debug page or a log line prints masked values.
    """

    def __repr__(self) -> str:
        return f"SecretDict({masked(self)!r})"

    __str__ = __repr__
