"""Mailgun's single-use signatures: spent only by a delivered post, scoped by the signing key.

Mailgun signs ``timestamp + token`` only, so tenantmail remembers each validated signature. These
tests pin down what that memory must not break (an ESP retry after a receiver error) and what it
must cover (the same platform-signed post at two tenants' URLs).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as HttpClient

from tenantmail import signals
from tenantmail.models import TenantMailSource
from tenantmail.webhooks import tracking_url
from tenantmail.webhooks.testing import mailgun_post
from tests import test_webhooks
from tests.conftest import Tenants
from tests.test_webhooks import ACME_SIGNING, PLATFORM_SIGNING, Received, post

hooked, received = test_webhooks.hooked, test_webhooks.received  # the fixtures, shared

pytestmark = [pytest.mark.django_db]


def test_a_retry_after_a_receiver_error_is_delivered(hooked: Tenants, received: Received) -> None:
    """The receiver fails once (500: Mailgun retries the same signed post); the retry counts."""
    failures = ["boom"]

    def flaky(**kwargs: Any) -> None:
        if failures:
            raise RuntimeError(failures.pop())

    body, content_type, _headers = mailgun_post(ACME_SIGNING, metadata={"tenant": "acme"})
    url = tracking_url(hooked.acme, "mailgun")
    client = HttpClient(raise_request_exception=False)
    signals.tracking.connect(flaky, dispatch_uid="flaky")
    try:
        first = client.post(url, data=body, content_type=content_type, HTTP_HOST="localhost")
        retry = client.post(url, data=body, content_type=content_type, HTTP_HOST="localhost")
        replay = client.post(url, data=body, content_type=content_type, HTTP_HOST="localhost")
    finally:
        signals.tracking.disconnect(dispatch_uid="flaky")
    assert first.status_code == 500
    assert retry.status_code == 200
    # The failed attempt reached the receivers too (at least once, as with Anymail), then the
    # retry; a true replay after that success is acknowledged and dispatched to nobody.
    assert [r["tenant"] for r in received.ours] == ["acme", "acme"]
    assert replay.status_code == 200
    assert len(received.ours) == 2


def test_a_rejected_post_does_not_spend_the_signature(hooked: Tenants, received: Received) -> None:
    """Validly signed but rejected after the claim (here: unparsable): nothing is remembered."""
    import json

    body, content_type, headers = mailgun_post(ACME_SIGNING)
    broken = json.loads(body)
    broken["event-data"] = "not an event"
    url = tracking_url(hooked.acme, "mailgun")
    assert post(url, (json.dumps(broken).encode(), content_type, headers)).status_code == 400
    assert post(url, (body, content_type, headers)).status_code == 200
    assert len(received.ours) == 1


def test_platform_signed_post_is_single_use_across_platform_tenants(
    hooked: Tenants, received: Received, settings: Any
) -> None:
    """initech and globex both send through the platform's account (the platform's key)."""
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING}
    type(hooked.globex).objects.filter(pk=hooked.globex.pk).update(mail_backend="", mail_options={})
    payload = mailgun_post(PLATFORM_SIGNING)
    assert post(tracking_url("initech", "mailgun"), payload).status_code == 200
    assert post(tracking_url("globex", "mailgun"), payload).status_code == 200  # acknowledged...
    assert post(tracking_url(None, "mailgun"), payload).status_code == 200
    assert [r["tenant"] for r in received.ours] == ["initech"]  # ...delivered once only


def test_blank_backend_from_get_mail_config_means_the_platform_keys(
    hooked: Tenants, received: Received, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overridden get_mail_config() returning backend="" sends through the platform account
    (the resolver tests truthiness), so its webhooks are checked with the platform's keys."""
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING}
    monkeypatch.setattr(
        type(hooked.acme), "get_mail_config", lambda self: TenantMailSource(backend="")
    )
    url = tracking_url("acme", "mailgun")
    assert post(url, mailgun_post(PLATFORM_SIGNING, metadata={"tenant": "acme"})).status_code == 200
    assert [r["tenant"] for r in received.ours] == ["acme"]
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 400
