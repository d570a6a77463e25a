"""Settings for the db_worker subprocesses the queue tests start (see tests/queue/conftest.py).

Same as the test settings, pointed at the *test* database the parent process created, with the
platform account on the parent's loopback fake ESP and the queue settings the test chose.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, TENANTMAIL

DATABASES["default"]["NAME"] = os.environ["TENANTMAIL_TEST_DB_NAME"]
TENANTMAIL = {
    **TENANTMAIL,
    "DEFAULT": {
        "BACKEND": "mailgun",
        "OPTIONS": {
            "api_key": os.environ["TENANTMAIL_PLATFORM_KEY"],
            "sender_domain": "mg.saas.example",
            "api_url": os.environ["TENANTMAIL_FAKE_MAILGUN_URL"],
        },
    },
    "QUEUE": json.loads(os.environ.get("TENANTMAIL_QUEUE", "{}")),
    # Rotation tests change a key in another process: look the tenant up afresh every send.
    "TENANT_CACHE_SECONDS": 0,
}
