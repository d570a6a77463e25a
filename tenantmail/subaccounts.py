"""Which backends are sub-account backends, their parent credentials, and a tenant's options.

In sub-account mode the tenant row holds no secret: ``mail_backend`` names a sub-account backend
and ``mail_subaccount`` (operator-only) names the sub-account. The parent credential comes from
``TENANTMAIL["SUBACCOUNTS"]`` -- settings only -- and is read on this path alone, so a tenant that
is not in sub-account mode never gets it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Final, NamedTuple

from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables

from .exceptions import TenantMailConfigurationError
from .isolation import ISOLATING_DEFAULTS, SES_BACKEND, isolation_base

SETTING: Final = 'TENANTMAIL["SUBACCOUNTS"]'

#: Short names a tenant's ``mail_backend`` may use for the sub-account backends.
SUBACCOUNT_BACKENDS: Mapping[str, str] = {
    "mailgun_subaccount": "tenantmail.esp.mailgun.MailgunSubaccountBackend",
    "sparkpost_subaccount": "tenantmail.esp.sparkpost.SparkPostSubaccountBackend",
    "amazon_ses_tenant": "tenantmail.esp.amazon_ses.AmazonSESTenantBackend",
}

#: ``TENANTMAIL["SUBACCOUNTS"]`` keys, and the backend option each one's identifier goes into
#: (kept here, not read from the classes, so parsing settings imports no ESP SDK).
IDENTIFIER_OPTIONS: Mapping[str, str] = {
    "mailgun": "subaccount_id",
    "sparkpost": "subaccount",
    "amazon_ses": "tenant_name",
}

#: The parent credential each ESP needs; without it Anymail would read ``ANYMAIL[...]`` instead.
PARENT_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "mailgun": ("api_key",),
    "sparkpost": ("api_key",),
    "amazon_ses": ("session_params",),
}

#: Mailgun ids are hex, SparkPost ids are numbers, SES tenant names are [A-Za-z0-9_-]{1,64}: one
#: conservative pattern, which also keeps the identifier safe in an HTTP header.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class SubaccountKind(NamedTuple):
    esp: str
    option: str


def parse_subaccounts(raw: object) -> dict[str, dict[str, Any]]:
    """Validate ``TENANTMAIL["SUBACCOUNTS"]``: ``{esp: {parent backend options}}``."""
    if not isinstance(raw, Mapping):
        raise TenantMailConfigurationError(
            'must be a dict such as {"mailgun": {"api_key": ...}}', setting=SETTING
        )
    out: dict[str, dict[str, Any]] = {}
    for esp, options in raw.items():
        if esp not in IDENTIFIER_OPTIONS:
            raise TenantMailConfigurationError(
                f"unknown ESP {esp!r}; expected some of {sorted(IDENTIFIER_OPTIONS)}",
                setting=SETTING,
            )
        if not isinstance(options, Mapping):
            raise TenantMailConfigurationError(
                f"the entry for {esp!r} must be a dict of the backend's options", setting=SETTING
            )
        option = IDENTIFIER_OPTIONS[esp]
        for name in (option, "alias"):
            if name in options:
                raise TenantMailConfigurationError(
                    f"the entry for {esp!r} may not set {name!r}: tenantmail sets it per tenant "
                    f"({option!r} comes from each tenant's mail_subaccount)",
                    setting=SETTING,
                )
        out[str(esp)] = dict(options)
    return out


@cache
def subaccount_kind(path: str) -> SubaccountKind | None:
    """The ESP and identifier option of a sub-account backend (a subclass counts), else None."""
    try:
        cls = import_string(path)
    except Exception:  # the factory reports an unimportable backend by name
        return None
    esp = getattr(cls, "subaccount_esp", None)
    option = getattr(cls, "subaccount_option", None)
    if isinstance(esp, str) and isinstance(option, str):
        return SubaccountKind(esp, option)
    return None


@sensitive_variables()
def subaccount_options(
    kind: SubaccountKind,
    backend: str,
    tenant_options: object,
    identifier: str,
    parents: Mapping[str, Mapping[str, Any]],
    schema: str,
) -> dict[str, Any]:
    """The inner backend's options: the parent credential plus the tenant's identifier."""
    if tenant_options:
        raise TenantMailConfigurationError(
            "must be empty in sub-account mode: the tenant sends with the platform's parent "
            f"credential ({SETTING}) as its sub-account, and holds no secret; clear it",
            tenant=schema,
            setting="mail_options",
        )
    if not identifier:
        raise TenantMailConfigurationError(
            f"is blank, but mail_backend {backend!r} sends as a sub-account; the platform "
            "operator sets it (provisioning or the admin)",
            tenant=schema,
            setting="mail_subaccount",
        )
    if not _IDENTIFIER.fullmatch(identifier):
        raise TenantMailConfigurationError(
            "must be an ESP sub-account id: letters, digits, '.', '_' or '-' (at most 128)",
            tenant=schema,
            setting="mail_subaccount",
        )
    parent = parents.get(kind.esp)
    where = f'{SETTING}["{kind.esp}"]'
    if parent is None:
        raise TenantMailConfigurationError(
            f"names a {kind.esp} sub-account backend, but {where} is not set; add the platform's "
            "parent credential there (settings only, never on a tenant)",
            tenant=schema,
            setting="mail_backend",
        )
    missing = [n for n in PARENT_REQUIRED.get(kind.esp, ()) if parent.get(n) in (None, "")]
    if missing:
        raise TenantMailConfigurationError(
            f"sub-account mode needs {', '.join(repr(n) for n in missing)} in {where}",
            tenant=schema,
            setting="mail_backend",
        )
    base = isolation_base(backend)
    out: dict[str, Any] = {**(ISOLATING_DEFAULTS[base] if base else {}), **parent}
    if base == SES_BACKEND:
        out.setdefault("client_params", {})  # never ANYMAIL["AMAZON_SES_CLIENT_PARAMS"]
    out[kind.option] = identifier
    return out
