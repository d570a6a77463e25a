"""Mailgun's single-use signatures: spent only by a delivered post, scoped by the signing key.

Mailgun signs ``timestamp + token`` only, so tenantmail remembers each validated signature. These
tests pin down what that memory must not break (an ESP retry after a receiver error) and what it
must cover (the same platform-signed post at two tenants' URLs).
"""

from __future__ import annotations

import json
import time
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


def _post_directly(payload: tuple[bytes, str, dict[str, str]], tenant_key: str = "acme") -> int:
    from django.test import RequestFactory

    from tenantmail.webhooks.esps import MailgunTrackingView

    body, content_type, _headers = payload
    request = RequestFactory().post("/hook/", data=body, content_type=content_type)
    return int(MailgunTrackingView.as_view()(request, tenant_key=tenant_key).status_code)


def test_a_signature_is_remembered_past_locmem_culling(
    hooked: Tenants, received: Received, settings: Any
) -> None:
    """Django's LocMemCache keeps 300 entries, then culls a third: used to store the signatures,
    a captured one was accepted again after a few hundred newer events, well within its age."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    assert isinstance(caches["default"], LocMemCache)  # the test settings' (Django's default)
    captured = mailgun_post(ACME_SIGNING)
    assert _post_directly(captured) == 200
    for _ in range(400):
        assert _post_directly(mailgun_post(ACME_SIGNING)) == 200
    assert _post_directly(captured) == 200  # acknowledged, but...
    assert len(received.ours) == 401  # ...not delivered again


def test_replay_cache_can_be_a_shared_cache(
    hooked: Tenants, received: Received, settings: Any, tmp_path: Any
) -> None:
    """With a cache every process shares (here file-based), the signature is kept there."""
    from django.core.cache import caches

    settings.CACHES = {
        **settings.CACHES,
        "replay": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        },
    }
    settings.TENANTMAIL = {**settings.TENANTMAIL, "WEBHOOKS": {"REPLAY_CACHE": "replay"}}
    body, content_type, headers = mailgun_post(ACME_SIGNING)
    signature = json.loads(body)["signature"]["signature"]
    url = tracking_url(hooked.acme, "mailgun")
    assert post(url, (body, content_type, headers)).status_code == 200
    assert caches["replay"].get(f"tenantmail:mailgun:{signature}") == 1
    assert post(url, (body, content_type, headers)).status_code == 200
    assert len(received.ours) == 1


def test_local_replay_store_expires_and_releases() -> None:
    from tenantmail.webhooks.replay import LocalReplayStore

    store = LocalReplayStore()
    assert store.add("a", 0.05)
    assert not store.add("a", 0.05)
    store.delete("a")
    assert store.add("a", 0.05)  # released: may be claimed again (the retry)
    assert store.add("b", 60)
    time.sleep(0.06)
    assert store.add("a", 60)  # expired
    assert not store.add("b", 60)
    assert len(store) == 2
    store.clear()
    assert len(store) == 0
