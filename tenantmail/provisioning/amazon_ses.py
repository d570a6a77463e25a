"""Amazon SES v2: one SES tenant per tenant, sent for with the platform's AWS keys (sub-accounts).

Amazon SES API v2 reference, "Tenants" (and botocore's ``sesv2`` service model, which boto3 calls
here with SigV4 as for any AWS API): ``GetTenant`` (``POST /v2/email/tenants/get``,
``{"TenantName"}``; ``NotFoundException`` when absent), ``CreateTenant``
(``POST /v2/email/tenants``),
``ListTenantResources`` (``POST /v2/email/tenants/resources/list``, answer ``{"TenantResources":
[{"ResourceType", "ResourceArn"}], "NextToken"}``) and ``CreateTenantResourceAssociation``
(``POST /v2/email/tenants/resources``, ``{"TenantName", "ResourceArn"}``). Each configured identity
or configuration set (``resource_arns``) missing from the tenant is associated. The tenant name goes
to ``mail_subaccount``; the tenant row stores no secret.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Run, refusal_reason
from .conf import AccountSettings
from .outcome import Outcome

ESP = "amazon_ses"
BACKEND = "amazon_ses_tenant"
SECRET_OPTION: str | None = None

#: SES: "up to 64 alphanumeric characters, including letters, numbers, hyphens and underscores".
_TENANT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_name(name: str) -> str | None:
    if _TENANT_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not a valid SES tenant name (letters, digits, '-' and '_', at most 64); "
        "choose a name_prefix that keeps it so"
    )


class _Client:
    """boto3's ``sesv2`` client, each error turned into a ProvisioningError naming the step."""

    def __init__(self, run: Run, account: AccountSettings) -> None:
        import boto3  # type: ignore[import-untyped]  # only needed to provision SES
        from botocore.config import Config  # type: ignore[import-untyped]

        from ..conf import get_settings

        timeout = get_settings().timeout
        self.run, self.account = run, account
        # One attempt: a retried CreateTenant after a lost answer is the next run's job (it finds
        # the tenant), and a failure is reported at the step it happened.
        config = Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1}
        )
        client_params = dict(account.client_params)
        given = client_params.pop("config", None)  # the settings' own botocore config, if any
        if given is not None:
            config = (given if isinstance(given, Config) else Config(**given)).merge(config)
        session = boto3.session.Session(**dict(account.session_params))
        self.client = session.client("sesv2", config=config, **client_params)

    def call(self, step: str, operation: str, missing_ok: bool = False, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            return getattr(self.client, operation)(**params)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if missing_ok and code == "NotFoundException":
                return None
            if code == "AlreadyExistsException":
                return {"AlreadyExists": True}
            reason = refusal_reason(
                status, self.account.credential, self.account.credential_setting
            )
            raise self.run.fail(step, f"{reason}: {code}", status) from None
        except BotoCoreError as error:
            # The class name says timeout / connection refused; the text may quote the URL only.
            raise self.run.fail(step, f"{type(error).__name__}") from None

    def close(self) -> None:
        self.client.close()


def provision(run: Run, account: AccountSettings) -> Outcome:
    ses = _Client(run, account)
    try:
        name = run.name
        tenant = ses.call("find SES tenant", "get_tenant", missing_ok=True, TenantName=name)
        if tenant is not None:
            run.log(f"GetTenant {name}: found")
            run.found.append(f"SES tenant {name!r}")
            associated = _associated(ses, name)
        elif run.dry_run:
            run.log(f"GetTenant {name}: not found; would CreateTenant {name}")
            associated = set()
        else:
            created = ses.call("create SES tenant", "create_tenant", TenantName=name)
            if created.get("AlreadyExists"):  # created meanwhile: same name, same tenant
                run.found.append(f"SES tenant {name!r}")
                associated = _associated(ses, name)
            else:
                run.created.append(f"SES tenant {name!r}")
                associated = set()
            run.log(f"CreateTenant {name}: done")
        for arn in account.resource_arns:
            if arn in associated:
                run.log(f"{arn}: already associated")
                continue
            if run.dry_run:
                run.log(f"would CreateTenantResourceAssociation {name} {arn}")
                continue
            ses.call(
                f"associate {arn}",
                "create_tenant_resource_association",
                TenantName=name,
                ResourceArn=arn,
            )
            run.created.append(f"the association of {arn} with SES tenant {name!r}")
            run.log(f"CreateTenantResourceAssociation {name} {arn}: done")
        return Outcome(name if tenant is not None or not run.dry_run else "")
    finally:
        ses.close()


def _associated(ses: _Client, name: str) -> set[str]:
    arns: set[str] = set()
    params: dict[str, Any] = {"TenantName": name}
    while True:
        page = ses.call("list tenant resources", "list_tenant_resources", **params)
        arns.update(r.get("ResourceArn", "") for r in page.get("TenantResources", []))
        if not page.get("NextToken"):
            return arns
        params["NextToken"] = page["NextToken"]
