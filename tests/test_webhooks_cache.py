"""What the webhook views keep between requests, and that it never outlives a change.

Per cached tenant instance they keep the tenant's derived state (own account or not, its
decrypted webhook secrets); a save, a bulk update or a settings change makes the tenant cache
fetch a new instance, so the next post is checked against the new secrets.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from tenantmail.webhooks import tracking_url
from tenantmail.webhooks.esps import MailgunTrackingView
from tenantmail.webhooks.testing import mailgun_post
from tests import test_webhooks
from tests.conftest import Tenants
from tests.test_webhooks import ACME_SIGNING, PLATFORM_SIGNING, Received, post

hooked, received = test_webhooks.hooked, test_webhooks.received  # the fixtures, shared

pytestmark = [pytest.mark.django_db]

ROTATED = "acme-rotated-CANARY-5d1e9b0c7a22"


def test_a_rotated_secret_applies_to_the_next_post(hooked: Tenants, received: Received) -> None:
    url = tracking_url(hooked.acme, "mailgun")
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 200
    hooked.acme.mail_webhook_secrets = {"mailgun": {"webhook_signing_key": ROTATED}}
    hooked.acme.save()
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 400
    assert post(url, mailgun_post(ROTATED)).status_code == 200


def test_a_bulk_update_applies_to_the_next_post(
    hooked: Tenants, received: Received, settings: Any
) -> None:
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": PLATFORM_SIGNING}
    url = tracking_url(hooked.acme, "mailgun")
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 200
    type(hooked.acme).objects.filter(pk=hooked.acme.pk).update(mail_backend="", mail_options={})
    # Now on the platform's account: the platform's key, not acme's own, checks its posts.
    assert post(url, mailgun_post(ACME_SIGNING)).status_code == 400
    assert post(url, mailgun_post(PLATFORM_SIGNING)).status_code == 200


def test_warm_posts_query_nothing(hooked: Tenants, settings: Any) -> None:
    """Delivered events without a queued message: no query at all once the tenant is cached."""
    view, factory = MailgunTrackingView.as_view(), RequestFactory()

    def one() -> int:
        body, content_type, _headers = mailgun_post(
            ACME_SIGNING, metadata={"tenant": "acme"}, message_id=""
        )
        request = factory.post("/hook/", data=body, content_type=content_type)
        return int(view(request, tenant_key="acme").status_code)

    assert one() == 200  # the tenant lookup
    with CaptureQueriesContext(connection) as queries:
        assert [one() for _ in range(5)] == [200] * 5
    assert queries.captured_queries == []
