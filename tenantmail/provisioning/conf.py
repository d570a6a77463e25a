"""``TENANTMAIL["PROVISIONING"]``: the platform's account-level ESP credentials, per ESP.

Read only when provisioning (never on a send), on first use and again after a settings change.
Account credentials live here -- or, where the sub-account mode already needs the same parent
credential, in ``TENANTMAIL["SUBACCOUNTS"]`` -- and never on a tenant row. Every problem is
reported at once; no value of a credential ever appears in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from ..exceptions import TenantMailConfigurationError
from ..masking import PUBLIC_OPTION_NAMES
from ..subaccounts import parse_subaccounts

SETTING: Final = 'TENANTMAIL["PROVISIONING"]'
SUBACCOUNTS_SETTING: Final = 'TENANTMAIL["SUBACCOUNTS"]'

#: The ESPs provisioning knows, and the keys each one's entry may set.
KEYS: Mapping[str, frozenset[str]] = {
    "mailgun": frozenset({"api_key", "api_url", "name_prefix"}),
    "postmark": frozenset({"account_token", "api_url", "name_prefix", "tenant_options"}),
    "amazon_ses": frozenset({"resource_arns", "session_params", "client_params", "name_prefix"}),
    "brevo": frozenset({"api_key", "api_url", "email", "name_prefix", "tenant_options"}),
}

#: The ESPs' own account API roots (each module cites the reference it follows).
DEFAULT_API_URLS: Mapping[str, str] = {
    "mailgun": "https://api.mailgun.net/",
    "postmark": "https://api.postmarkapp.com/",
    "brevo": "https://api.brevo.com/v3/",
}


@dataclass(frozen=True)
class AccountSettings:
    """One ESP's parsed entry: where its account API is and the account credential."""

    esp: str
    api_url: str = ""
    credential: str = field(default="", repr=False)
    #: Where ``credential`` came from, for messages (``TENANTMAIL["SUBACCOUNTS"]["mailgun"]``...).
    credential_setting: str = ""
    name_prefix: str = ""
    #: Non-secret backend options stored next to an issued key (e.g. a regional ``api_url``).
    tenant_options: Mapping[str, Any] = field(default_factory=dict)
    #: Brevo: the organisation e-mail of a new sub-account; ``{name}`` is the sub-account name.
    email: str = ""
    #: Amazon SES: the identities / configuration sets every tenant is associated with.
    resource_arns: tuple[str, ...] = ()
    session_params: Mapping[str, Any] = field(default_factory=dict, repr=False)
    client_params: Mapping[str, Any] = field(default_factory=dict)


def _at(where: str, key: str) -> str:
    return f'{where}["{key}"]'


def _str(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        problems.append(f"{_at(where, key)} must be a string")
        return ""
    return value


def _url(raw: str, where: str, problems: list[str]) -> str:
    if not raw.startswith(("https://", "http://")):
        problems.append(f"{_at(where, 'api_url')} must be an http(s):// URL")
        return ""
    return raw if raw.endswith("/") else raw + "/"


def _tenant_options(entry: Mapping[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    raw = entry.get("tenant_options", {})
    if not isinstance(raw, Mapping):
        problems.append(
            f"{_at(where, 'tenant_options')} must be a dict of non-secret backend options"
        )
        return {}
    secret = sorted(str(name) for name in raw if name not in PUBLIC_OPTION_NAMES)
    if secret:
        # The row's options are the tenant's; a platform secret must never be copied there.
        problems.append(
            f"{_at(where, 'tenant_options')} may hold only non-secret options such as 'api_url'; "
            f"remove {', '.join(repr(n) for n in secret)}"
        )
        return {}
    return dict(raw)


def _mailgun_url(subaccounts: Mapping[str, Mapping[str, Any]]) -> str:
    # The sub-account mode's api_url is Anymail's send root (".../v3/"); the account API is
    # "/v5/..." on the same host, so one regional setting serves both.
    send_url = subaccounts.get("mailgun", {}).get("api_url")
    if isinstance(send_url, str) and send_url.rstrip("/").endswith("/v3"):
        return send_url.rstrip("/")[: -len("v3")]
    return DEFAULT_API_URLS["mailgun"]


def _parse_entry(
    esp: str,
    entry: Mapping[str, Any],
    subaccounts: Mapping[str, Mapping[str, Any]],
    problems: list[str],
) -> AccountSettings:
    where = f'{SETTING}["{esp}"]'
    unknown = sorted(str(k) for k in set(entry) - KEYS[esp])
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; expected some of {sorted(KEYS[esp])}")
    prefix = _str(entry, "name_prefix", where, problems)
    if esp == "amazon_ses":
        return _parse_ses(entry, subaccounts, where, prefix, problems)
    url = _str(entry, "api_url", where, problems) or (
        _mailgun_url(subaccounts) if esp == "mailgun" else DEFAULT_API_URLS[esp]
    )
    key_name = "account_token" if esp == "postmark" else "api_key"
    credential, credential_setting = (
        _str(entry, key_name, where, problems),
        f"{_at(where, key_name)}",
    )
    if esp == "mailgun":
        parent = subaccounts.get("mailgun")
        if parent is None:
            problems.append(
                f"{where}: provisioned Mailgun tenants send in sub-account mode with the primary "
                f'key in {SUBACCOUNTS_SETTING}["mailgun"]; set that entry too'
            )
        elif not credential:
            credential = str(parent.get("api_key") or "")
            credential_setting = f'{SUBACCOUNTS_SETTING}["mailgun"]["api_key"]'
    if not credential:
        problems.append(f"{credential_setting} is missing: the account credential is required")
    email = _str(entry, "email", where, problems)
    if esp == "brevo" and "@" not in email:
        problems.append(
            f"{_at(where, 'email')} is required: the organisation e-mail of each new sub-account, "
            "e.g. 'mail+{name}@platform.example' ({name} is the sub-account name)"
        )
    return AccountSettings(
        esp=esp,
        api_url=_url(url, where, problems),
        credential=credential,
        credential_setting=credential_setting,
        name_prefix=prefix,
        tenant_options=_tenant_options(entry, where, problems),
        email=email,
    )


def _parse_ses(
    entry: Mapping[str, Any],
    subaccounts: Mapping[str, Mapping[str, Any]],
    where: str,
    prefix: str,
    problems: list[str],
) -> AccountSettings:
    arns = entry.get("resource_arns", ())
    if (
        isinstance(arns, str)
        or not isinstance(arns, list | tuple)
        or not arns
        or not all(isinstance(a, str) and a.startswith("arn:") for a in arns)
    ):
        problems.append(
            f"{_at(where, 'resource_arns')} must be a non-empty list of ARNs (the identities and "
            "configuration sets each SES tenant is associated with)"
        )
        arns = ()
    parent = subaccounts.get("amazon_ses")
    if parent is None:
        problems.append(
            f"{where}: provisioned SES tenants send with the platform's AWS keys in "
            f'{SUBACCOUNTS_SETTING}["amazon_ses"]; set that entry too'
        )
        parent = {}
    session = entry.get("session_params", parent.get("session_params", {}))
    client = entry.get("client_params", parent.get("client_params", {}))
    if not isinstance(session, Mapping) or not session.get("aws_access_key_id"):
        problems.append(
            f"{_at(where, 'session_params')} (or the SUBACCOUNTS entry's) must hold the platform's "
            "aws_access_key_id, aws_secret_access_key and region_name"
        )
        session = {}
    if not isinstance(client, Mapping):
        problems.append(f"{_at(where, 'client_params')} must be a dict of boto3 client options")
        client = {}
    return AccountSettings(
        esp="amazon_ses",
        credential=str(session.get("aws_access_key_id") or ""),
        credential_setting=f"{_at(where, 'session_params')}",
        name_prefix=prefix,
        resource_arns=tuple(arns),
        session_params=dict(session),
        client_params=dict(client),
    )


def parse_provisioning(raw: object, subaccounts_raw: object) -> dict[str, AccountSettings]:
    """Validate the setting; raise one error listing every problem."""
    problems: list[str] = []
    try:
        subaccounts = parse_subaccounts(subaccounts_raw)
    except TenantMailConfigurationError:
        subaccounts = {}  # reported by the core settings check; the entries below say what's due
    if not isinstance(raw, Mapping):
        problems.append(
            f"{SETTING} must be a dict such as {{'postmark': {{'account_token': ...}}}}"
        )
        raw = {}
    out: dict[str, AccountSettings] = {}
    for esp, entry in raw.items():
        if esp not in KEYS:
            problems.append(f"{SETTING}: unknown ESP {esp!r}; expected some of {sorted(KEYS)}")
        elif not isinstance(entry, Mapping):
            problems.append(f'{SETTING}["{esp}"] must be a dict')
        else:
            out[esp] = _parse_entry(esp, entry, subaccounts, problems)
    if problems:
        raise TenantMailConfigurationError("; ".join(problems), setting=SETTING)
    return out


@cache
def get_provisioning() -> dict[str, AccountSettings]:
    tenantmail = getattr(settings, "TENANTMAIL", {})
    tenantmail = tenantmail if isinstance(tenantmail, Mapping) else {}
    return parse_provisioning(tenantmail.get("PROVISIONING", {}), tenantmail.get("SUBACCOUNTS", {}))


def account_settings(esp: str) -> AccountSettings:
    """The parsed entry for ``esp``; a configuration error naming the setting when it is absent."""
    if esp not in KEYS:
        raise TenantMailConfigurationError(
            f"cannot provision {esp!r}; choose one of {', '.join(sorted(KEYS))}", setting=SETTING
        )
    parsed = get_provisioning()
    if esp not in parsed:
        raise TenantMailConfigurationError(
            f"has no {esp!r} entry: add the platform's {esp} account credential there "
            "(see README, Provisioning)",
            setting=SETTING,
        )
    return parsed[esp]


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting == "TENANTMAIL":
        get_provisioning.cache_clear()
