"""Postmark: a server per tenant, sending with the server token issued at creation (own-key mode).

Postmark API reference, "Servers" (postmarkapp.com/developer/api/servers-api, and the user guide
"Managing servers"): every call carries the account token in ``X-Postmark-Account-Token``.
``GET /servers?count=&offset=&name=`` lists servers whose name contains ``name`` (answer
``{"TotalCount", "Servers": [...]}``); ``GET /servers/{serverid}`` returns one server;
``POST /servers`` with ``{"Name": ...}`` creates one. A server object carries ``ID``, ``Name`` and
``ApiTokens`` (its server tokens; the first is used). The token is stored encrypted in the tenant's
``mail_options["server_token"]``; the server's ``ID`` (not a secret) goes to ``mail_subaccount``.
"""

from __future__ import annotations

from typing import Any

from django.views.decorators.debug import sensitive_variables

from .base import AccountAPI, Run, shape_error
from .conf import AccountSettings
from .outcome import Outcome

ESP = "postmark"
BACKEND = "postmark"
SECRET_OPTION: str | None = "server_token"  # noqa: S105 (an option name)


def check_name(name: str) -> str | None:
    return None


@sensitive_variables()  # the account credential and the issued key are locals here
def provision(run: Run, account: AccountSettings) -> Outcome:
    api = AccountAPI(
        run,
        account.api_url,
        credential=account.credential,
        credential_setting=account.credential_setting,
        headers={"X-Postmark-Account-Token": account.credential},
    )
    try:
        step = "find server"
        params = {"count": 500, "offset": 0, "name": run.name}
        listed = api.call(step, "GET", "servers", params=params)
        servers = listed.get("Servers") if isinstance(listed, dict) else None
        if not isinstance(servers, list):
            raise shape_error(run, step, "'Servers' list")
        # "name" filters by containment; only the exact name is this tenant's server.
        found = next(
            (s for s in servers if isinstance(s, dict) and s.get("Name") == run.name), None
        )
        if found is not None:
            server_id = str(found.get("ID") or "")
            if not server_id:
                raise shape_error(run, step, "server 'ID'")
            run.log(f"GET servers?name={run.name}: found server {server_id}")
            run.found.append(f"Postmark server {run.name!r} ({server_id})")
            if run.dry_run:
                run.log(f"would GET servers/{server_id} for its server token")
                return Outcome(server_id)
            server = api.call("read server token", "GET", f"servers/{server_id}")
            return Outcome(server_id, _token(run, "read server token", server))
        run.log(f"GET servers?name={run.name}: none named {run.name!r}")
        step = "create server"
        if run.dry_run:
            run.log(f"would POST servers Name={run.name}")
            return Outcome("")
        server = api.call(step, "POST", "servers", json={"Name": run.name})
        server_id = str(server.get("ID") or "") if isinstance(server, dict) else ""
        if not server_id:
            raise shape_error(run, step, "server 'ID'")
        run.created.append(f"Postmark server {run.name!r} ({server_id})")
        run.log(f"POST servers Name={run.name}: created server {server_id}")
        return Outcome(server_id, _token(run, step, server))
    finally:
        api.close()


def _token(run: Run, step: str, server: Any) -> str:
    tokens = server.get("ApiTokens") if isinstance(server, dict) else None
    if not isinstance(tokens, list) or not tokens or not isinstance(tokens[0], str):
        raise shape_error(run, step, "'ApiTokens'")
    return tokens[0]
