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

from django.views.decorators.debug import sensitive_variables

from ..exceptions import TenantMailConfigurationError
from ..masking import mask, masked
from . import amazon_ses, brevo, mailgun, postmark, rows, webhooks
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


@sensitive_variables()  # the issued key and webhook credential are locals here
def provision(
    tenant: Any,
    esp: str,
    *,
    dry_run: bool = False,
    replace: bool = False,
    webhook_base_url: str | None = None,
) -> ProvisionResult:
    """Find or create ``tenant``'s sub-account at ``esp`` and store it on the tenant row.

    Idempotent: a tenant already provisioned at ``esp`` is left alone (no ESP call); otherwise
    an existing sub-account of the same name (``name_prefix`` + schema name) is reused. The row
    is written only after every ESP step succeeded, in one transaction. A tenant with other mail
    settings is refused unless ``replace=True``. ``dry_run=True`` makes only the read calls
    (find) and writes nothing. ``webhook_base_url`` (the platform's public origin) also registers
    the tenant's tracking webhook (Postmark, Brevo; see :mod:`.webhooks`). Raises
    :class:`ProvisioningError` when an ESP step fails and
    :class:`~tenantmail.exceptions.TenantMailConfigurationError` for settings problems.
    """
    module = ESPS.get(esp)
    schema = str(getattr(tenant, "schema_name", "") or "")
    if module is None:
        raise TenantMailConfigurationError(
            f"cannot provision {esp!r}; choose one of {', '.join(ESPS)}", tenant=schema
        )
    account = account_settings(esp)
    url = webhooks.webhook_url(tenant, esp, webhook_base_url) if webhook_base_url else None
    name = account.name_prefix + schema
    backend: str = module.BACKEND
    secret_option: str | None = module.SECRET_OPTION
    result = ProvisionResult(
        tenant=schema, esp=esp, backend=backend, subaccount="", dry_run=dry_run
    )
    before = (tenant.mail_backend, tenant.mail_subaccount)
    run = Run(tenant=schema, esp=esp, name=name, dry_run=dry_run)
    if rows.provisioned(tenant, backend, secret_option):
        result = evolve(result, subaccount=tenant.mail_subaccount, already_provisioned=True)
        if url is None or rows.has_webhook_secret(tenant, esp):
            return result
        # Provisioned before, without its webhook: register that alone.
        return _register_webhook(tenant, before, run, account, result, url)
    rows.check_tenant(tenant, schema, name, module, replace)
    placeholder = rows.options_for(account, secret_option, None)
    rows.check_settings(tenant, schema, backend, placeholder)
    outcome = module.provision(run, account)
    options = rows.options_for(account, secret_option, outcome.secret)
    webhook_secret = None if url is None or dry_run else webhooks.new_secret()
    if url is not None:
        webhooks.register(run, account, url, outcome.secret, webhook_secret)
    fields: dict[str, str] = {
        "mail_backend": backend,
        "mail_subaccount": outcome.subaccount or f"(the new {esp} id)",
        "mail_options": str(masked(options)) if outcome.secret else "{}",
    }
    if dry_run and secret_option is not None:
        fields["mail_options"] = f"{{{secret_option!r}: (issued by {esp}, stored encrypted)}}"
    if url is not None:
        fields["mail_webhook_secrets"] = _shown_webhook_secret(esp, webhook_secret)
    result = evolve(
        result,
        subaccount=outcome.subaccount,
        created=tuple(run.created),
        found=tuple(run.found),
        steps=tuple(run.steps),
        fields=fields,
        webhook=url or "",
    )
    if dry_run:
        return result
    try:
        rows.check_settings(tenant, schema, backend, options, subaccount=outcome.subaccount)
    except TenantMailConfigurationError as error:
        raise run.fail("check the new settings", str(error)) from None
    values = {
        "mail_backend": backend,
        "mail_subaccount": outcome.subaccount,
        "mail_options": options,
    }
    rows.write(tenant, before, run, values, webhook_secret)
    return result


@sensitive_variables()
def _register_webhook(
    tenant: Any,
    before: tuple[str, str],
    run: Run,
    account: AccountSettings,
    result: ProvisionResult,
    url: str,
) -> ProvisionResult:
    key = tenant.mail_options.get(ESPS[run.esp].SECRET_OPTION)
    secret = None if run.dry_run else webhooks.new_secret()
    webhooks.register(run, account, url, key, secret)
    result = evolve(
        result,
        steps=tuple(run.steps),
        fields={"mail_webhook_secrets": _shown_webhook_secret(run.esp, secret)},
        webhook=url,
    )
    if not run.dry_run:
        rows.write(tenant, before, run, {}, secret)
    return result


def _shown_webhook_secret(esp: str, secret: str | None) -> str:
    shown = mask(secret) if secret else "(generated, stored encrypted)"
    return f"{{{esp!r}: {{'webhook_secret': {shown}}}}}"
