"""``tenantmail_reencrypt``: counts what is still on an old key, and never overwrites a credential
saved by another process while it runs."""

from __future__ import annotations

import threading
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.db import connection

from tenantmail.crypto import generate_key
from tenantmail.testing import FakeESP
from tests.conftest import Tenants, acme_options
from tests.tenants_app.models import Client
from tests.test_fields import TEST_KEY, all_raw_options, decrypt_with, fresh, use_keys

ROTATED_KEY = "key-acme-rotated-after-a-leak-99"


def reencrypt(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command("tenantmail_reencrypt", *args, stdout=out, **options)
    return out.getvalue()


def test_dry_run_counts_the_rows_still_on_an_old_key(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    tokens = sum(1 for value in all_raw_options().values() if value)
    use_keys(settings, generate_key(), TEST_KEY)
    acme = fresh("acme")
    acme.mail_options = acme_options(fake_esp, api_key="key-acme-new-333333333")
    acme.save()  # written under the new key

    before = all_raw_options()
    assert reencrypt("--dry-run").splitlines()[0] == (
        f"would re-encrypt mail_options of {tokens - 1} tenant(s) still on an old key; "
        "1 already on the newest key."
    )
    assert all_raw_options() == before

    assert reencrypt().startswith(f"re-encrypted mail_options of {tokens - 1} tenant(s) ")
    assert all_raw_options()["acme"] == before["acme"]  # already current: not rewritten
    assert reencrypt("--dry-run").startswith("would re-encrypt mail_options of 0 tenant(s) ")


class SaveAfterRead(StringIO):
    """The command's output stream: when it reports having read the rows, another process (a
    thread with its own database connection) saves acme's new credential and commits."""

    def __init__(self, save: Any) -> None:
        super().__init__()
        self.save = save
        self.saved = False

    def write(self, text: str) -> int:
        if text.startswith("read mail_options"):
            self.saved = True
            worker = threading.Thread(target=self.save)
            worker.start()
            worker.join()
        return super().write(text)


def _in_another_connection(work: Any) -> Any:
    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    return run


def test_a_credential_saved_while_it_runs_is_not_overwritten(
    tenants: Tenants, fake_esp: FakeESP, settings: Any
) -> None:
    original = all_raw_options()["acme"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT mail_webhook_secrets FROM public.tenants_app_client WHERE schema_name = 'acme'"
        )
        (original_secrets,) = cursor.fetchone()
    new_key = generate_key()
    use_keys(settings, new_key, TEST_KEY)
    rotated = acme_options(fake_esp, api_key=ROTATED_KEY)

    def tenant_rotates_its_key() -> None:
        # Both encrypted columns, as the admin form saves them: the row is then entirely on the
        # new key, so the command's second run below leaves it alone (and unlocked).
        Client.objects.filter(schema_name="acme").update(
            mail_options=rotated, mail_webhook_secrets={}
        )

    def restore() -> None:  # committed rows outlive the test's transaction
        with connection.cursor() as cursor:
            # Should the command (wrongly) hold acme's row, fail rather than wait for it forever.
            cursor.execute("SET lock_timeout = '10s'")
            cursor.execute(
                "UPDATE public.tenants_app_client SET mail_options = %s, mail_webhook_secrets = %s"
                " WHERE schema_name = %s",
                [original, original_secrets, "acme"],
            )

    out = SaveAfterRead(_in_another_connection(tenant_rotates_its_key))
    try:
        call_command("tenantmail_reencrypt", verbosity=2, stdout=out)
        assert "left 1 tenant(s) whose mail settings changed since they were read: acme." in (
            out.getvalue()
        )
        assert ROTATED_KEY not in out.getvalue()
        assert decrypt_with(new_key, all_raw_options()["acme"]) == rotated
        assert fresh("acme").mail_options == rotated
        # The other rows were re-encrypted; a second run finds acme already current.
        assert decrypt_with(new_key, all_raw_options()["globex"])
        assert reencrypt().startswith("re-encrypted mail_options of 0 tenant(s) ")
    finally:
        if out.saved:
            worker = threading.Thread(target=_in_another_connection(restore))
            worker.start()
            worker.join()
