"""Running the stages for one tenant: resolve, then the transport's prober, then a test message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from ..backends import TenantBackend
from ..conf import BACKEND_ALIASES, get_settings
from ..config import _source, resolve
from ..diagnosis import tenant_problems
from ..endpoints import destination_check
from ..exceptions import TenantMailConfigurationError
from ..factory import build_backend
from ..models import TenantMailSource
from ..tenancy import ActiveTenant
from . import store
from .probe import Prober, Target
from .report import (
    STAGES,
    Outcome,
    RecipientNotAllowed,
    StageFailed,
    StageResult,
    VerificationReport,
    ok,
    skipped,
)

logger = logging.getLogger("tenantmail.verification")

SUBJECT = "tenantmail: test message for {schema}"
BODY = (
    "This is a test message from the platform's mail verification for tenant {schema}.\n"
    "It went out through that tenant's mail settings, exactly as its own mail does.\n"
)


def is_staff_address(address: str) -> bool:
    """True if ``address`` is the email of an active staff user (the only allowed recipients)."""
    user_model: Any = get_user_model()
    field = user_model.get_email_field_name()
    users = user_model._default_manager.filter(
        **{f"{field}__iexact": address}, is_staff=True, is_active=True
    )
    return bool(address) and users.exists()


def verify(tenant: Any, *, send_to: str | None = None, force: bool = False) -> VerificationReport:
    """Verify ``tenant``'s mail settings stage by stage; store and return the report.

    ``send_to`` receives the test message and must be an active staff user's address (else
    :class:`RecipientNotAllowed`); without it the test message is skipped. Within
    ``TENANTMAIL["VERIFY_INTERVAL"]`` of the last verification this raises
    :class:`VerificationThrottled` unless ``force`` (operators only).
    """
    if send_to is not None and not is_staff_address(send_to):
        raise RecipientNotAllowed(
            "the test message goes only to a staff member's own address; "
            f"{send_to!r} is not the email of an active staff user"
        )
    s = get_settings()
    now = timezone.now()
    store.claim(tenant, s, now=now, force=force)
    report = VerificationReport(str(tenant.schema_name), run_stages(tenant, send_to), now)
    store.store(tenant, s, report)
    return report


def run_stages(tenant: Any, send_to: str | None) -> tuple[StageResult, ...]:
    results: list[StageResult] = []
    prober: list[Prober] = []

    def run(name: str, stage: Callable[[], Outcome]) -> bool:
        try:
            outcome = stage()
        except StageFailed as failure:
            results.append(StageResult(name, "failed", failure.detail))
            return False
        except Exception as error:  # a bug or an odd answer: reported, never quoted
            logger.warning(
                "tenantmail: verification stage %s raised %s", name, type(error).__name__
            )
            results.append(StageResult(name, "failed", f"{name} raised {type(error).__name__}"))
            return False
        results.append(StageResult(name, outcome.status, outcome.detail))
        return True

    def resolve_stage() -> Outcome:
        target = resolve_target(tenant)
        prober.append(prober_for(target))
        return ok(describe(target))

    try:
        if run("resolve", resolve_stage):
            p = prober[0]
            stages: list[tuple[str, Callable[[], Outcome]]] = [
                ("connect", p.connect),
                ("tls", p.tls),
                ("authenticate", p.authenticate),
                ("sender", p.sender),
                ("test_message", lambda: send_test(tenant, send_to, p.target)),
            ]
            for name, stage in stages:
                if not run(name, stage):
                    break
    finally:
        for p in prober:
            p.close()
    done = {r.name for r in results}
    return (*results, *(StageResult(n, "not_run") for n in STAGES if n not in done))


@sensitive_variables()
def resolve_target(tenant: Any) -> Target:
    """The resolve stage: every configuration problem (the first is reported), then the config
    and the inner backend exactly as a send would build them."""
    schema = str(tenant.schema_name)
    active = ActiveTenant(schema, tenant)
    try:
        source = _source(active) or TenantMailSource(backend=None)
        problems = tenant_problems(schema, source)
        if problems:
            more = (
                f" (and {len(problems) - 1} more: see tenantmail_check)"
                if len(problems) > 1
                else ""
            )
            raise StageFailed(f"{problems[0]}{more}")
        config = resolve(active)
        backend = build_backend(config)
    except TenantMailConfigurationError as error:
        raise StageFailed(str(error)) from None
    s = get_settings()
    from_email = config.defaults.get("from_email") or settings.DEFAULT_FROM_EMAIL
    return Target(
        schema=schema,
        config=config,
        backend=backend,
        from_email=parseaddr(str(from_email))[1] or str(from_email),
        check=destination_check(config)
        if config.own_account and s.block_private_endpoints
        else None,
        timeout=s.timeout,
    )


def describe(target: Target) -> str:
    config = target.config
    short = next((k for k, v in BACKEND_ALIASES.items() if v == config.backend), config.backend)
    if config.parent_setting is not None:
        return f"{short}, sub-account {target.config.options.get(_identifier(target)) or ''}"
    return f"{short}, {'own account' if config.own_account else 'the platform account'}"


def _identifier(target: Target) -> str:
    return str(getattr(type(target.backend), "subaccount_option", ""))


def prober_for(target: Target) -> Prober:
    from anymail.backends.base_requests import AnymailRequestsBackend

    from . import http

    backend = target.backend
    if isinstance(backend, DjangoSMTPBackend):
        from .smtp import SMTPProber

        return SMTPProber(target)
    ses = _ses_backend_class()
    if ses is not None and isinstance(backend, ses):
        from .ses import SESProber

        return SESProber(target)
    if isinstance(backend, AnymailRequestsBackend):
        for cls, prober in _http_probers(http).items():
            if isinstance(backend, cls):
                return prober(target)
        return http.HTTPProber(target)
    return Prober(target)


def _ses_backend_class() -> type | None:
    try:
        from anymail.backends.amazon_ses import EmailBackend
    except ImportError:  # boto3 not installed: no tenant can use SES either
        return None
    return EmailBackend  # type: ignore[no-any-return]


def _http_probers(http: Any) -> dict[type, type[Prober]]:
    from anymail.backends import mailgun, postmark, sendgrid, sparkpost

    return {
        mailgun.EmailBackend: http.MailgunProber,
        postmark.EmailBackend: http.PostmarkProber,
        sendgrid.EmailBackend: http.SendGridProber,
        sparkpost.EmailBackend: http.SparkPostProber,
    }


def send_test(tenant: Any, send_to: str | None, target: Target) -> Outcome:
    """The test message, through the real send path (``TenantBackend`` pinned to the tenant)."""
    if send_to is None:
        return skipped("no staff address given: use --send-to")
    schema = target.schema
    message = EmailMessage(SUBJECT.format(schema=schema), BODY.format(schema=schema), to=[send_to])
    try:
        sent = TenantBackend(tenant=tenant).send_messages([message])
    except Exception as error:
        raise StageFailed(f"the test message was refused: {_send_error(error)}") from None
    if sent != 1:
        raise StageFailed("the test message was not sent (the backend reported 0 sent)")
    return ok(f"sent to {send_to}")


def _send_error(error: Exception) -> str:
    """What went wrong, without quoting a response body or an SMTP reply."""
    if isinstance(error, TenantMailConfigurationError):
        return str(error)
    status = getattr(error, "status_code", None)
    esp = getattr(error, "esp_name", None)
    if status is not None:
        return f"{esp or 'the ESP'} answered {status}"
    code = getattr(error, "smtp_code", None)
    if isinstance(code, int):
        return f"the SMTP server answered {code if 200 <= code < 600 else 'something else'}"
    return type(error).__name__
