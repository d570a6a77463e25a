"""Mailgun: a subaccount of the platform's account, sent for with the primary key (sub-accounts).

Mailgun API reference, "Subaccounts" (documentation.mailgun.com, api-reference/openapi-final/tag/
Subaccounts): ``GET /v5/accounts/subaccounts`` lists them (query ``filter`` = name, ``limit`` up to
1000; answer ``{"subaccounts": [{"id", "name", "status"}], "total"}``), ``POST
/v5/accounts/subaccounts`` with the ``name`` parameter creates one (answer ``{"subaccount": {"id",
"name", "status"}}``; the reference lists ``name`` as a query parameter, and Mailgun's POST
endpoints take their parameters as form fields too, which is how it is sent here); both with HTTP
basic auth ``api:<primary key>``. The id goes to
``mail_subaccount``; the tenant stores no secret.
"""

from __future__ import annotations

from typing import Any

from .base import AccountAPI, Run, shape_error
from .conf import AccountSettings
from .outcome import Outcome

ESP = "mailgun"
BACKEND = "mailgun_subaccount"
SECRET_OPTION: str | None = None
PATH = "v5/accounts/subaccounts"


def check_name(name: str) -> str | None:
    return None  # Mailgun takes any display name; the id is Mailgun's


def provision(run: Run, account: AccountSettings) -> Outcome:
    api = AccountAPI(
        run,
        account.api_url,
        credential=account.credential,
        credential_setting=account.credential_setting,
        auth=("api", account.credential),
    )
    try:
        step = "find subaccount"
        listed = api.call(step, "GET", PATH, params={"filter": run.name, "limit": 1000})
        items = listed.get("subaccounts") if isinstance(listed, dict) else None
        if not isinstance(items, list):
            raise shape_error(run, step, "'subaccounts' list")
        found = _named(items, run.name)
        if found is not None:
            subaccount_id = str(found.get("id") or "")
            if not subaccount_id:
                raise shape_error(run, step, "subaccount 'id'")
            if found.get("status", "open") != "open":
                raise run.fail(
                    step,
                    f"subaccount {run.name!r} ({subaccount_id}) exists but is "
                    f"{found.get('status')!r}; enable it at Mailgun first",
                )
            run.log(f"GET {PATH}?filter={run.name}: found subaccount {subaccount_id}")
            run.found.append(f"Mailgun subaccount {run.name!r} ({subaccount_id})")
            return Outcome(subaccount_id)
        run.log(f"GET {PATH}?filter={run.name}: none named {run.name!r}")
        step = "create subaccount"
        if run.dry_run:
            run.log(f"would POST {PATH} name={run.name}")
            return Outcome("")
        created = api.call(step, "POST", PATH, data={"name": run.name})
        item = created.get("subaccount") if isinstance(created, dict) else None
        subaccount_id = str(item.get("id") or "") if isinstance(item, dict) else ""
        if not subaccount_id:
            raise shape_error(run, step, "'subaccount' with an 'id'")
        run.created.append(f"Mailgun subaccount {run.name!r} ({subaccount_id})")
        run.log(f"POST {PATH} name={run.name}: created subaccount {subaccount_id}")
        return Outcome(subaccount_id)
    finally:
        api.close()


def _named(items: list[Any], name: str) -> dict[str, Any] | None:
    # "filter" may match more than the exact name; only the exact one is this tenant's.
    return next((i for i in items if isinstance(i, dict) and i.get("name") == name), None)
