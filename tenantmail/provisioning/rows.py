"""The tenant row's side of provisioning: is it provisioned, may it be, would the new settings
send, and the one transaction that writes them."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from django.db import router, transaction
from django.views.decorators.debug import sensitive_variables

from ..conf import expand_backend
from ..diagnosis import tenant_problems
from ..exceptions import TenantMailConfigurationError
from ..fields import UndecryptableOptions
from ..models import TenantMailSource
from .base import Run
from .conf import AccountSettings

#: Stand-ins for the values the ESP hands out, to check the settings before anything is created.
PLACEHOLDER_ID = "0123456789abcdef"
PLACEHOLDER_KEY = "placeholder-0000000000000000"


def provisioned(tenant: Any, backend: str, secret_option: str | None) -> bool:
    if not tenant.mail_subaccount or not tenant.mail_backend:
        return False
    if expand_backend(tenant.mail_backend) != expand_backend(backend):
        return False
    options = tenant.mail_options
    return secret_option is None or (
        isinstance(options, Mapping) and bool(options.get(secret_option))
    )


def has_webhook_secret(tenant: Any, esp: str) -> bool:
    stored = tenant.mail_webhook_secrets
    entry = stored.get(esp) if isinstance(stored, Mapping) else None
    return isinstance(entry, Mapping) and bool(entry.get("webhook_secret"))


def check_tenant(tenant: Any, schema: str, name: str, module: ModuleType, replace: bool) -> None:
    from django_tenants.utils import get_public_schema_name

    if not schema or schema == get_public_schema_name():
        raise TenantMailConfigurationError(
            "is the platform itself: provision tenants, not the public schema", tenant=schema
        )
    problem = module.check_name(name)
    if problem:
        raise TenantMailConfigurationError(
            problem, tenant=schema, setting=f'TENANTMAIL["PROVISIONING"]["{module.ESP}"]'
        )
    has_settings = bool(tenant.mail_backend or tenant.mail_subaccount or tenant.mail_options)
    if has_settings and not replace:
        raise TenantMailConfigurationError(
            f"already has mail settings ({tenant.mail_backend or 'options only'}"
            f"{', ' + tenant.mail_subaccount if tenant.mail_subaccount else ''}); provisioning "
            "would replace them: pass replace=True (--replace) to do so",
            tenant=schema,
            setting="mail_backend",
        )


def options_for(
    account: AccountSettings, secret_option: str | None, secret: str | None
) -> dict[str, Any]:
    if secret_option is None:
        return {}  # sub-account mode: the tenant holds no secret, and no options at all
    return {**account.tenant_options, secret_option: secret or PLACEHOLDER_KEY}


@sensitive_variables()
def check_settings(
    tenant: Any,
    schema: str,
    backend: str,
    options: Mapping[str, Any],
    *,
    subaccount: str = PLACEHOLDER_ID,
) -> None:
    """The settings provisioning would write must pass the send path's own rules (allowed
    backend, parent credential present, the tenant's defaults in this mode) -- checked before
    anything is created at the ESP, so a run does not leave a sub-account nobody can use."""
    source = TenantMailSource(
        backend=backend,
        options=dict(options),
        defaults=tenant.mail_defaults if tenant.mail_defaults is not None else {},
        subaccount=subaccount,
    )
    problems = tenant_problems(schema, source)
    if problems:
        raise TenantMailConfigurationError(
            "the provisioned settings would not send: " + "; ".join(str(p) for p in problems),
            tenant=schema,
        )


@sensitive_variables()
def write(
    tenant: Any,
    before: tuple[str, str],
    run: Run,
    fields: Mapping[str, Any],
    webhook_secret: str | None = None,
) -> None:
    """Set ``fields`` (and the ESP's webhook secret) on the row, in one transaction, unless its
    mail fields changed since ``before`` was read."""
    model = type(tenant)
    with transaction.atomic(using=router.db_for_write(model)):
        row = model.objects.select_for_update().get(pk=tenant.pk)
        if (row.mail_backend, row.mail_subaccount) != before:
            raise run.fail(
                "write the tenant",
                "the tenant's mail settings changed while provisioning ran; run it again",
            )
        values = dict(fields)
        if webhook_secret is not None:
            stored = row.mail_webhook_secrets
            if isinstance(stored, UndecryptableOptions):
                raise run.fail(
                    "write the tenant",
                    'mail_webhook_secrets cannot be decrypted with TENANTMAIL["ENCRYPTION_KEYS"]'
                    "; fix the key ring first (the webhook is registered with a credential this "
                    "run could not store: run again)",
                )
            current = dict(stored) if isinstance(stored, Mapping) else {}
            values["mail_webhook_secrets"] = {
                **current,
                run.esp: {"webhook_secret": webhook_secret},
            }
        for name, value in values.items():
            setattr(row, name, value)
        # The platform chose both the issued key and where it is sent: not a moved secret.
        row.confirm_mail_endpoint_change()
        row.save(update_fields=list(values))
    for name, value in values.items():
        setattr(tenant, name, value)
    tenant._remember_mail_endpoint()
