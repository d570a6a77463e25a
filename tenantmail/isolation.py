"""Making a tenant's own-account options explicit, so no backend falls back to the platform's.

Django's SMTP backend (constructed without an ``alias``, i.e. before Django 6.1) reads
``EMAIL_HOST_USER``/``EMAIL_HOST_PASSWORD``, ``EMAIL_USE_TLS``/``EMAIL_USE_SSL``,
``EMAIL_SSL_CERTFILE``/``EMAIL_SSL_KEYFILE``, ``EMAIL_PORT`` and ``EMAIL_TIMEOUT`` for every option
that is ``None`` or missing. Anymail reads ``ANYMAIL["<ESP>_<OPTION>"]`` for every option that is
missing -- for Amazon SES that includes the platform's AWS session and client parameters, and with
none of those, boto3 finds the platform's own AWS identity (environment, instance role, profile).

So a tenant config never reaches a backend with such a gap: :func:`isolate` fills every option whose
absence would resolve to a platform setting with an explicit value, and refuses SES configs that
do not carry the tenant's own AWS credentials. (Tenant ``None`` values are refused before this, in
:mod:`tenantmail.config`.) Platform *policy* that names no account -- ``ANYMAIL["SEND_DEFAULTS"]``,
``IGNORE_*``, ``REQUESTS_TIMEOUT`` and an ESP's ``API_URL`` region -- still applies to tenants.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables

from .exceptions import TenantMailConfigurationError

SMTP_BACKEND: Final = "django.core.mail.backends.smtp.EmailBackend"
SES_BACKEND: Final = "anymail.backends.amazon_ses.EmailBackend"
MAILGUN_BACKEND: Final = "anymail.backends.mailgun.EmailBackend"

#: Options filled in for tenant configs when absent, so a backend cannot fall back to the
#: platform's settings. SMTP's ``port`` and ``timeout`` are filled by :func:`isolate` too.
ISOLATING_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    SMTP_BACKEND: {
        "username": "",
        "password": "",
        "use_tls": False,
        "use_ssl": False,
        # "" (not None): Django would otherwise present the platform's client certificate.
        "ssl_keyfile": "",
        "ssl_certfile": "",
    },
    SES_BACKEND: {
        "configuration_set_name": None,
        "message_tag_name": None,
    },
    # None = the From address' domain (Anymail), never ANYMAIL["MAILGUN_SENDER_DOMAIN"].
    MAILGUN_BACKEND: {"sender_domain": None},
    # Objects in the platform's ESP account (a stream, a sandbox inbox, a sub-account): None is
    # Anymail's own default, i.e. the tenant account's default.
    "anymail.backends.postmark.EmailBackend": {"message_stream": None},
    "anymail.backends.mailtrap.EmailBackend": {"sandbox_id": None},
    "anymail.backends.sparkpost.EmailBackend": {"subaccount": None},
}

#: What a tenant may put in SES ``session_params`` / ``client_params`` / ``client_params.config``.
#: An allow-list: anything else (``profile_name``, ``botocore_session``, a CA bundle path in
#: ``verify``, botocore's ``client_cert``/``proxies_config`` paths) names platform-side state.
SES_SESSION_PARAMS: Final = frozenset(
    {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region_name"}
)
SES_CLIENT_PARAMS: Final = frozenset({"region_name", "endpoint_url", "config", "verify", "use_ssl"})
SES_CLIENT_CONFIG: Final = frozenset(
    {
        "connect_timeout",
        "read_timeout",
        "retries",
        "region_name",
        "signature_version",
        "max_pool_connections",
        "tcp_keepalive",
    }
)
_SES_REQUIRED: Final = ("aws_access_key_id", "aws_secret_access_key")


@cache
def isolation_base(path: str) -> str | None:
    """The known backend whose isolation rules apply to ``path`` (a subclass counts as it)."""
    if path in ISOLATING_DEFAULTS:
        return path
    try:
        cls = import_string(path)
    except Exception:  # the factory reports an unimportable backend by name
        return None
    for base_path in ISOLATING_DEFAULTS:
        try:
            base = import_string(base_path)
        except Exception:  # noqa: S112 -- e.g. boto3 not installed: not an SES subclass
            continue
        if isinstance(cls, type) and issubclass(cls, base):
            return base_path
    return None


def _error(message: str, schema: str) -> TenantMailConfigurationError:
    return TenantMailConfigurationError(message, tenant=schema, setting="mail_options")


@sensitive_variables()
def isolate(
    backend: str,
    options: Mapping[str, Any],
    schema: str,
    *,
    timeout: float,
) -> dict[str, Any]:
    """``options`` with every platform-falling-back gap filled; SES credentials checked.

    ``timeout`` is the SMTP timeout for a tenant that sets none: ``TENANTMAIL["TIMEOUT"]``,
    required (no default of its own here, so there is one tenant default, documented, and never
    ``EMAIL_TIMEOUT``).
    """
    base = isolation_base(backend)
    if base is None:
        return dict(options)
    out = {**ISOLATING_DEFAULTS[base], **options}
    if base == SMTP_BACKEND:
        # Django 6.1's own rule for a missing port; before 6.1 it would be EMAIL_PORT.
        out.setdefault("port", 465 if out["use_ssl"] else 587 if out["use_tls"] else 25)
        out.setdefault("timeout", timeout)
    elif base == SES_BACKEND:
        # {} (a fresh one per config), not ANYMAIL["AMAZON_SES_CLIENT_PARAMS"].
        out.setdefault("client_params", {})
        _check_ses(out, schema)
    return out


@sensitive_variables()
def _check_ses(options: Mapping[str, Any], schema: str) -> None:
    session = options.get("session_params")
    if not isinstance(session, Mapping) or any(
        not isinstance(session.get(name), str) or not session.get(name) for name in _SES_REQUIRED
    ):
        raise _error(
            "amazon_ses needs the tenant's own AWS credentials: session_params with "
            "'aws_access_key_id' and 'aws_secret_access_key'; without them boto3 would send with "
            "the platform's AWS identity",
            schema,
        )
    _allowed(session, SES_SESSION_PARAMS, "session_params", schema)
    client = options.get("client_params")
    if not isinstance(client, Mapping):
        raise _error("option 'client_params' must be a JSON object", schema)
    _allowed(client, SES_CLIENT_PARAMS, "client_params", schema)
    from .conf import get_settings  # conf imports this module (through subaccounts)

    if client.get("endpoint_url") and get_settings().block_private_endpoints:
        # boto3 makes its own connections, past the socket check BLOCK_PRIVATE_ENDPOINTS puts on
        # SMTP and requests sessions: a tenant-chosen SES endpoint is refused outright instead.
        raise _error(
            "client_params 'endpoint_url' may not be set by a tenant while "
            'TENANTMAIL["BLOCK_PRIVATE_ENDPOINTS"] is on: the platform cannot check where boto3 '
            "connects",
            schema,
        )
    if "verify" in client and not isinstance(client["verify"], bool):
        raise _error(
            "client_params 'verify' must be true or false: a path names a file on the "
            "platform's servers",
            schema,
        )
    config = client.get("config", {})
    if not isinstance(config, Mapping):
        raise _error("client_params 'config' must be a JSON object", schema)
    _allowed(config, SES_CLIENT_CONFIG, "client_params.config", schema)


def _allowed(params: Mapping[str, Any], allowed: frozenset[str], where: str, schema: str) -> None:
    unknown = sorted(str(name) for name in params if name not in allowed)
    if unknown:
        raise _error(
            f"{where} may not contain {', '.join(repr(n) for n in unknown)} for a tenant (it "
            f"would use platform-side state such as a local AWS profile or file); allowed: "
            f"{', '.join(sorted(allowed))}",
            schema,
        )
