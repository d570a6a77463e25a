"""What a provisioning run reports, how it fails, and the HTTP client for ESP account APIs.

The account APIs are the platform's own (their URLs come from settings), but their calls follow
the rules the send path applies to a tenant endpoint (:mod:`tenantmail.endpoints`): a bounded
timeout (``TENANTMAIL["TIMEOUT"]``), no redirects followed, and no response body in an error --
an account API's answer can echo what it was sent, and a provisioning error lands in logs and
terminals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from ..conf import get_settings
from ..exceptions import TenantMailError
from ..masking import mask


@dataclass(frozen=True)
class ProvisionResult:
    """The outcome of :func:`tenantmail.provisioning.provision`; holds no secret."""

    tenant: str
    esp: str
    #: The ``mail_backend`` the tenant now has (or would have, in a dry run).
    backend: str
    #: The ESP's identifier of the sub-account / server / SES tenant (``mail_subaccount``).
    subaccount: str
    #: What this run created at the ESP, e.g. ``("Postmark server 'acme'",)``.
    created: tuple[str, ...] = ()
    #: What already existed at the ESP and was reused.
    found: tuple[str, ...] = ()
    #: Each step, one line, in order; masked (what a dry run would do, too).
    steps: tuple[str, ...] = ()
    #: The tenant row's fields set, each value masked where it is a secret.
    fields: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False
    #: The tenant was provisioned for this ESP before: nothing was created or changed (but a
    #: requested webhook it lacked).
    already_provisioned: bool = False
    #: The tracking webhook URL registered (or to be, in a dry run); "" when none was asked for.
    webhook: str = ""

    def summary(self) -> str:
        hook = ""
        if self.webhook:
            hook = f"; webhook {'would be ' if self.dry_run else ''}registered at {self.webhook}"
        if self.already_provisioned:
            done = hook or "; nothing to do"
            return f"{self.tenant}: already provisioned at {self.esp} ({self.subaccount}){done}"
        verb = "would be provisioned" if self.dry_run else "provisioned"
        sub = self.subaccount or "new"
        return f"{self.tenant}: {verb} at {self.esp} ({sub}), {self.backend}{hook}"


class ProvisioningError(TenantMailError):
    """An ESP step failed. Names the tenant, the ESP and the step; holds no secret.

    ``created`` lists what this run had already created at the ESP before the failure: nothing
    was written to the tenant row, and the next run finds those and carries on from there.
    """

    def __init__(
        self,
        message: str,
        *,
        tenant: str,
        esp: str,
        step: str,
        status: int | None = None,
        created: tuple[str, ...] = (),
    ) -> None:
        self.tenant, self.esp, self.step, self.status = tenant, esp, step, status
        self.created = created
        text = f"tenant {tenant!r}: provisioning at {esp} failed at step {step!r}: {message}"
        if created:
            text += (
                f"; already created at {esp} by this run: {', '.join(created)} -- nothing was "
                "written to the tenant, and the next run finds it and continues"
            )
        else:
            text += "; nothing was created and the tenant is unchanged"
        super().__init__(text)


@dataclass
class Run:
    """One provisioning run's context and log, handed to each ESP module."""

    tenant: str
    esp: str
    name: str
    dry_run: bool
    steps: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)

    def fail(self, step: str, message: str, status: int | None = None) -> ProvisioningError:
        return ProvisioningError(
            message,
            tenant=self.tenant,
            esp=self.esp,
            step=step,
            status=status,
            created=tuple(self.created),
        )

    def log(self, line: str) -> None:
        self.steps.append(line)


def refusal_reason(status: int, credential: str, credential_setting: str) -> str:
    if status in (401, 403):
        return (
            f"the ESP refused the account credential {mask(credential)} ({status}); check "
            f"{credential_setting}"
        )
    kind = "rate limited" if status == 429 else "server error" if status >= 500 else "refused"
    return f"the ESP answered {status} ({kind}; the response body is withheld)"


class AccountAPI:
    """``requests`` calls to one ESP's account API, with the endpoint rules of the send path."""

    def __init__(
        self,
        run: Run,
        base_url: str,
        *,
        credential: str,
        credential_setting: str,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.run = run
        self.base_url = base_url
        self._credential = credential
        self._credential_setting = credential_setting
        self.session = requests.Session()
        self.session.max_redirects = 0
        self.session.headers.update({"Accept": "application/json", **(headers or {})})
        self.session.auth = auth
        self.timeout = get_settings().timeout

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        step: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
        missing_ok: bool = False,
    ) -> Any:
        """The decoded JSON answer; ``None`` for a 404 when ``missing_ok``."""
        url = self.base_url + path
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=data,
                json=json,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise self.run.fail(
                step, f"no answer within {self.timeout:g}s (TENANTMAIL['TIMEOUT'])"
            ) from None
        except requests.TooManyRedirects:  # max_redirects = 0: raised on the first redirect
            raise self.run.fail(step, "the ESP answered a redirect, not followed") from None
        except requests.RequestException as error:
            raise self.run.fail(
                step, f"could not reach {self.base_url} ({type(error).__name__})"
            ) from None
        with response:
            status = response.status_code
            if missing_ok and status == 404:
                return None
            if status >= 400:
                raise self.run.fail(
                    step, refusal_reason(status, self._credential, self._credential_setting), status
                )
            if status == 204 or not response.content:
                return {}  # e.g. Brevo's "204 No Content" for an update
            try:
                return response.json()
            except ValueError:
                raise self.run.fail(step, f"the ESP's answer ({status}) is not JSON") from None


def shape_error(run: Run, step: str, what: str) -> ProvisioningError:
    """The ESP answered 2xx but not in its documented shape."""
    return run.fail(step, f"the ESP's answer has no {what} (not the documented shape)")
