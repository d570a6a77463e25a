"""Provisioning: create a tenant's sub-account at the ESP and store the result on the tenant.

``provision(tenant, esp)`` (and ``manage.py tenantmail_provision``) finds or creates the tenant's
sub-account through the ESP's documented account API -- a Mailgun subaccount, a Postmark server, an
Amazon SES v2 tenant, a Brevo sub-account -- and then, in one transaction, sets the tenant's
``mail_backend``, ``mail_subaccount`` (the ESP's id, never a secret) and, for ESPs that issue a key,
``mail_options`` (the key, encrypted). One small module per ESP (:mod:`.mailgun`, :mod:`.postmark`,
:mod:`.amazon_ses`, :mod:`.brevo`) holds that ESP's calls and cites the reference it follows.

Core pieces it uses: :mod:`tenantmail.diagnosis` (the new settings must pass the send path's rules
before anything is created, and again before they are written), :mod:`tenantmail.conf`
(``TIMEOUT``) and the tenant model's mail fields. Its own setting is ``TENANTMAIL["PROVISIONING"]``
(:mod:`.conf`). The send path never imports this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace as evolve
from types import ModuleType
from typing import Any

from django.db import router, transaction
from django.views.decorators.debug import sensitive_variables

from ..conf import expand_backend
from ..diagnosis import tenant_problems
from ..exceptions import TenantMailConfigurationError
from ..masking import masked
from ..models import TenantMailSource
from . import amazon_ses, brevo, mailgun, postmark
from .base import ProvisioningError, ProvisionResult, Run
from .conf import AccountSettings, account_settings

__all__ = ["ESPS", "ProvisionResult", "ProvisioningError", "provision"]

#: The ESPs ``provision()`` knows, by the name ``--esp`` takes.
ESPS: Mapping[str, ModuleType] = {
    "mailgun": mailgun,
    "postmark": postmark,
    "amazon_ses": amazon_ses,
    "brevo": brevo,
}

#: Stand-ins for the values the ESP hands out, to check the settings before anything is created.
_PLACEHOLDER_ID = "0123456789abcdef"
_PLACEHOLDER_KEY = "placeholder-0000000000000000"


def provision(
    tenant: Any, esp: str, *, dry_run: bool = False, replace: bool = False
) -> ProvisionResult:
    """Find or create ``tenant``'s sub-account at ``esp`` and store it on the tenant row.

    Idempotent: a tenant already provisioned at ``esp`` is left alone (no ESP call); otherwise
    an existing sub-account of the same name (``name_prefix`` + schema name) is reused. The row
    is written only after every ESP step succeeded, in one transaction. A tenant with other mail
    settings is refused unless ``replace=True``. ``dry_run=True`` makes only the read calls
    (find) and writes nothing. Raises :class:`ProvisioningError` when an ESP step fails and
    :class:`~tenantmail.exceptions.TenantMailConfigurationError` for settings problems.
    """
    module = ESPS.get(esp)
    schema = str(getattr(tenant, "schema_name", "") or "")
    if module is None:
        raise TenantMailConfigurationError(
            f"cannot provision {esp!r}; choose one of {', '.join(ESPS)}", tenant=schema
        )
    account = account_settings(esp)
    name = account.name_prefix + schema
    backend: str = module.BACKEND
    secret_option: str | None = module.SECRET_OPTION
    result = ProvisionResult(
        tenant=schema, esp=esp, backend=backend, subaccount="", dry_run=dry_run
    )
    if _provisioned(tenant, backend, secret_option):
        return evolve(result, subaccount=tenant.mail_subaccount, already_provisioned=True)
    _check_tenant(tenant, schema, name, module, replace)
    _check_settings(tenant, schema, backend, _options(account, secret_option, _PLACEHOLDER_KEY))
    before = (tenant.mail_backend, tenant.mail_subaccount)
    run = Run(tenant=schema, esp=esp, name=name, dry_run=dry_run)
    outcome = module.provision(run, account)
    options = _options(account, secret_option, outcome.secret)
    fields = {
        "mail_backend": backend,
        "mail_subaccount": outcome.subaccount or f"(the new {esp} id)",
        "mail_options": str(masked(options)) if outcome.secret else "{}",
    }
    if dry_run and secret_option is not None:
        fields["mail_options"] = f"{{{secret_option!r}: (issued by {esp}, stored encrypted)}}"
    result = evolve(
        result,
        subaccount=outcome.subaccount,
        created=tuple(run.created),
        found=tuple(run.found),
        steps=tuple(run.steps),
        fields=fields,
    )
    if dry_run:
        return result
    try:
        _check_settings(tenant, schema, backend, options, subaccount=outcome.subaccount)
    except TenantMailConfigurationError as error:
        raise run.fail("check the new settings", str(error)) from None
    _write(tenant, before, backend, outcome.subaccount, options, run)
    return result


def _provisioned(tenant: Any, backend: str, secret_option: str | None) -> bool:
    if not tenant.mail_subaccount or not tenant.mail_backend:
        return False
    if expand_backend(tenant.mail_backend) != expand_backend(backend):
        return False
    options = tenant.mail_options
    return secret_option is None or (
        isinstance(options, Mapping) and bool(options.get(secret_option))
    )


def _check_tenant(tenant: Any, schema: str, name: str, module: ModuleType, replace: bool) -> None:
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


def _options(
    account: AccountSettings, secret_option: str | None, secret: str | None
) -> dict[str, Any]:
    if secret_option is None:
        return {}  # sub-account mode: the tenant holds no secret, and no options at all
    return {**account.tenant_options, secret_option: secret or _PLACEHOLDER_KEY}


@sensitive_variables()
def _check_settings(
    tenant: Any,
    schema: str,
    backend: str,
    options: Mapping[str, Any],
    *,
    subaccount: str = _PLACEHOLDER_ID,
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
def _write(
    tenant: Any,
    before: tuple[str, str],
    backend: str,
    subaccount: str,
    options: dict[str, Any],
    run: Run,
) -> None:
    model = type(tenant)
    with transaction.atomic(using=router.db_for_write(model)):
        row = model.objects.select_for_update().get(pk=tenant.pk)
        if (row.mail_backend, row.mail_subaccount) != before:
            raise run.fail(
                "write the tenant",
                "the tenant's mail settings changed while provisioning ran; run it again",
            )
        row.mail_backend, row.mail_subaccount, row.mail_options = backend, subaccount, options
        # The platform chose both the issued key and where it is sent: not a moved secret.
        row.confirm_mail_endpoint_change()
        row.save(update_fields=["mail_backend", "mail_subaccount", "mail_options"])
    tenant.mail_backend, tenant.mail_subaccount, tenant.mail_options = backend, subaccount, options
    tenant._remember_mail_endpoint()
