"""End to end, in headless Chromium: an operator sets acme's API key in the platform admin, acme's
contact page sends a message, and the fake ESP received it with exactly that key -- which no page
ever shows in clear.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any

import pytest

from tenantmail.masking import mask
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, Site

# Part of `make test` (not marked slow: it takes a few seconds). Skipped only without Chromium,
# and never in CI, where .ci/run installs it: there a missing browser must fail, not pass quietly.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (as root, with apt)",
)

SEEDED_ACME_KEY = "key-acme-subaccount-7f3a9c1e5b"  # example_site/seed.py
WAIT = 15.0


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition)


def _submit(driver: Any, button: Any) -> None:
    """Click a submit button and wait for the next page to replace this one."""
    from selenium.common.exceptions import WebDriverException

    def replaced(_driver: Any) -> bool:
        try:
            button.is_enabled()
        except WebDriverException:
            # Stale -- or, mid-navigation, Chromium's "Node with given id does not belong to the
            # document", which ec.staleness_of() lets through as an error: the same answer.
            return True
        return False

    button.click()
    _wait(driver, replaced)


def test_admin_key_change_is_used_by_the_tenant_page_and_shown_masked(
    example_site: Site, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    new_key = f"key-e2e-{secrets.token_hex(12)}"
    subject = f"Browser test {secrets.token_hex(4)}"

    # 1. The operator logs in to the platform admin (public schema, localhost).
    browser.get(example_site.url("localhost", "/admin/login/?next=/admin/customers/client/"))
    browser.find_element(By.NAME, "username").send_keys(example_site.admin_username)
    browser.find_element(By.NAME, "password").send_keys(example_site.admin_password)
    _submit(
        browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]")
    )
    assert "/admin/customers/client/" in browser.current_url, browser.page_source[:2000]

    # 2. ... opens acme: the stored key is not on the page, only masked.
    browser.find_element(By.LINK_TEXT, "Acme").click()
    key_input = _wait(browser, lambda d: d.find_element(By.NAME, "mail_option_api_key"))
    assert key_input.get_attribute("type") == "password"
    assert key_input.get_attribute("value") == ""
    assert SEEDED_ACME_KEY not in browser.page_source
    assert mask(SEEDED_ACME_KEY) in browser.page_source

    # 3. A malformed message default is refused with a readable error, and the key typed in is
    #    not echoed back.
    defaults = browser.find_element(By.NAME, "mail_defaults")
    defaults.clear()
    defaults.send_keys('{"from_email": "hello@acme.example\\nBcc: victim@example.com"}')
    key_input.send_keys(new_key)
    _submit(browser, browser.find_element(By.NAME, "_continue"))
    assert "contains a line break" in browser.page_source
    assert new_key not in browser.page_source
    assert browser.find_element(By.NAME, "mail_option_api_key").get_attribute("value") == ""

    # 4. ... fixes it and saves the new key.
    defaults = browser.find_element(By.NAME, "mail_defaults")
    defaults.clear()
    defaults.send_keys('{"from_email": "hello@acme.example"}')
    browser.find_element(By.NAME, "mail_option_api_key").send_keys(new_key)
    _submit(browser, browser.find_element(By.NAME, "_continue"))
    assert "was changed successfully" in browser.page_source, browser.page_source[:3000]
    assert new_key not in browser.page_source
    assert mask(new_key) in browser.page_source

    # 5. Acme's contact page (acme.localhost) sends a message as acme.
    browser.get(example_site.url("acme.localhost", "/contact/"))
    subject_input = browser.find_element(By.NAME, "subject")
    subject_input.clear()
    subject_input.send_keys(subject)
    _submit(browser, browser.find_element(By.ID, "send"))
    assert "/received/" in browser.current_url
    assert "Sent as Acme" in browser.page_source

    # 6. The received-mail page shows the message with the new key, masked, as acme's own.
    row = browser.find_element(By.XPATH, f"//tr[td[@class='subject'][text()='{subject}']]")
    assert row.get_attribute("data-tenant") == "acme"
    assert row.find_element(By.CSS_SELECTOR, "td.credential").text == mask(new_key)
    assert "acme's own account" in row.text
    assert new_key not in browser.page_source

    # 7. The fake ESP received exactly the new key (compared by hash: no page shows it).
    received = example_site.get_json("localhost", "/received.json")["messages"]
    mine = [m for m in received if m["subject"] == subject]
    assert len(mine) == 1, received
    assert mine[0]["server"] == "mailgun API"
    assert mine[0]["tenant"] == "acme"
    assert mine[0]["credential_sha256"] == hashlib.sha256(new_key.encode()).hexdigest()
    assert mine[0]["credential"] == mask(new_key)
    assert mine[0]["isolated"] is True

    # 8. Every tenant sends (from the platform's page); each message used its own account, or
    #    the platform's for initech, which has none. The screenshot shows it at a glance.
    browser.get(example_site.url("localhost", "/"))
    _submit(browser, browser.find_element(By.ID, "send-all"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#received tbody tr")
    tenants = {row.get_attribute("data-tenant") for row in rows}
    assert {"acme", "globex", "hooli", "initech"} <= tenants
    assert browser.find_elements(By.CSS_SELECTOR, "#received td.bad") == []
    assert new_key not in browser.page_source
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "received-mail.png"))
