"""Brevo: a corporate sub-account per tenant, sending with an API key issued for it (own-key mode).

Brevo API reference, "Master account" (developers.brevo.com/reference): every call carries the
master account's key in the ``api-key`` header. ``GET /corporate/subAccount?offset=&limit=`` lists
sub-accounts (answer ``{"count", "subAccounts": [{"id", "companyName", "active", ...}]}``);
``POST /corporate/subAccount`` with ``{"companyName", "email"}`` creates one (201, ``{"id"}``);
``POST /corporate/subAccount/key`` with ``{"id", "name"}`` issues an API v3 key for it (201,
``{"key", "status"}``). The key is stored encrypted in ``mail_options["api_key"]``; the sub-account
id (not a secret) goes to ``mail_subaccount``. Brevo shows a key once: a run that finds the
sub-account but not a stored key issues a new key.
"""

from __future__ import annotations

from django.views.decorators.debug import sensitive_variables

from .base import AccountAPI, Run, shape_error
from .conf import AccountSettings
from .outcome import Outcome

ESP = "brevo"
BACKEND = "brevo"
SECRET_OPTION: str | None = "api_key"  # noqa: S105 (an option name, not a secret)
PAGE = 100


def check_name(name: str) -> str | None:
    return None


@sensitive_variables()  # the account credential and the issued key are locals here
def provision(run: Run, account: AccountSettings) -> Outcome:
    api = AccountAPI(
        run,
        account.api_url,
        credential=account.credential,
        credential_setting=account.credential_setting,
        headers={"api-key": account.credential},
    )
    try:
        subaccount_id = _find(run, api)
        if subaccount_id:
            run.found.append(f"Brevo sub-account {run.name!r} ({subaccount_id})")
        elif run.dry_run:
            run.log(f"would POST corporate/subAccount companyName={run.name}")
        else:
            step = "create sub-account"
            email = account.email.replace("{name}", run.name)
            created = api.call(
                step, "POST", "corporate/subAccount", json={"companyName": run.name, "email": email}
            )
            subaccount_id = str(created.get("id") or "") if isinstance(created, dict) else ""
            if not subaccount_id:
                raise shape_error(run, step, "sub-account 'id'")
            run.created.append(f"Brevo sub-account {run.name!r} ({subaccount_id})")
            run.log(f"POST corporate/subAccount companyName={run.name}: created {subaccount_id}")
        step = "create API key"
        if not subaccount_id.isdigit() and not run.dry_run:  # Brevo ids are numbers ("long")
            raise shape_error(run, step, "numeric sub-account 'id'")
        if run.dry_run:
            run.log("would POST corporate/subAccount/key (a new key for the sub-account)")
            return Outcome(subaccount_id)
        issued = api.call(
            step,
            "POST",
            "corporate/subAccount/key",
            json={"id": int(subaccount_id), "name": f"tenantmail {run.name}"},
        )
        key = issued.get("key") if isinstance(issued, dict) else None
        if not isinstance(key, str) or not key:
            raise shape_error(run, step, "'key'")
        run.created.append(f"an API key for Brevo sub-account {subaccount_id}")
        run.log(f"POST corporate/subAccount/key id={subaccount_id}: issued a key")
        return Outcome(subaccount_id, key)
    finally:
        api.close()


def _find(run: Run, api: AccountAPI) -> str:
    step = "find sub-account"
    offset = 0
    while True:
        listed = api.call(
            step, "GET", "corporate/subAccount", params={"offset": offset, "limit": PAGE}
        )
        items = listed.get("subAccounts") if isinstance(listed, dict) else None
        if not isinstance(items, list):
            raise shape_error(run, step, "'subAccounts' list")
        for item in items:
            if isinstance(item, dict) and item.get("companyName") == run.name and item.get("id"):
                run.log(f"GET corporate/subAccount: found sub-account {item['id']}")
                return str(item["id"])
        offset += len(items)
        total = listed.get("count", 0)
        if not items or not isinstance(total, int) or offset >= total:
            run.log(f"GET corporate/subAccount: none named {run.name!r}")
            return ""
