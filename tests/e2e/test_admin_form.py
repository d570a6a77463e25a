"""In headless Chromium: the tenant form shows the chosen backend's inputs only, and the example's
pages fit a 1280 px wide laptop screen (screenshots in test-artifacts/)."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import ARTIFACTS, Site
from tests.e2e.test_browser import _submit, _wait, pytestmark  # noqa: F401  (same skip rule)

LAPTOP = (1280, 800)


def _log_in(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url("localhost", "/admin/login/?next=/admin/customers/client/"))
    browser.find_element(By.NAME, "username").send_keys(site.admin_username)
    browser.find_element(By.NAME, "password").send_keys(site.admin_password)
    _submit(
        browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]")
    )


def _shown(browser: Any) -> set[str]:
    """The option inputs a person can see."""
    from selenium.webdriver.common.by import By

    return {
        element.get_attribute("name")
        for element in browser.find_elements(By.CSS_SELECTOR, "[name^='mail_option_']")
        if element.is_displayed()
    }


def _choose(browser: Any, backend: str) -> set[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.NAME, "mail_backend")).select_by_value(backend)
    return _shown(browser)


def _fits(browser: Any) -> None:
    width, client = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];"
    )
    assert width <= client, f"{browser.current_url}: {width} px wide in a {client} px window"


def test_the_form_shows_the_chosen_backends_inputs(example_site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.set_window_size(*LAPTOP)
    _log_in(browser, example_site)
    browser.find_element(By.LINK_TEXT, "Acme").click()  # on Mailgun
    _wait(browser, lambda d: d.find_element(By.NAME, "mail_option_api_key"))
    mailgun = {"mail_option_api_key", "mail_option_sender_domain", "mail_option_api_url"}
    assert _shown(browser) == mailgun
    assert _choose(browser, "postmark") == {"mail_option_server_token", "mail_option_api_url"}
    smtp = _choose(browser, "smtp")
    assert {"mail_option_host", "mail_option_port", "mail_option_password"} <= smtp
    assert "mail_option_api_key" not in smtp
    assert _choose(browser, "") == set()
    assert _choose(browser, "mailgun") == mailgun
    _fits(browser)
    backend = browser.find_element(By.NAME, "mail_backend")
    browser.execute_script("arguments[0].scrollIntoView();", backend)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "admin-tenant-mailgun.png"))

    # A tenant on the platform's account: its option sections start shut; choosing Mailgun
    # opens its credentials (observed: they stayed collapsed).
    browser.get(example_site.url("localhost", "/admin/customers/client/"))
    browser.find_element(By.LINK_TEXT, "Initech").click()
    _wait(browser, lambda d: d.find_element(By.NAME, "mail_backend"))
    assert _shown(browser) == set()
    assert _choose(browser, "mailgun") == mailgun

    # A new tenant's message defaults start as an empty object (observed: "null").
    browser.get(example_site.url("localhost", "/admin/customers/client/add/"))
    defaults = _wait(browser, lambda d: d.find_element(By.NAME, "mail_defaults"))
    assert defaults.get_attribute("value").strip() == "{}"
    _fits(browser)


def test_the_example_pages_fit_a_laptop_screen(example_site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.set_window_size(*LAPTOP)
    for page in ("/", "/received/"):
        browser.get(example_site.url("localhost", page))
        _fits(browser)
    # Hooli's contact page sends through its SMTP server (the longest message ids) and lands on
    # its received-mail page. (Not "send as every tenant": another test changes acme's key, which
    # would leave acme's earlier rows with a credential nobody owns any more.)
    browser.get(example_site.url("hooli.localhost", "/contact/"))
    _fits(browser)
    _submit(browser, browser.find_element(By.ID, "send"))
    assert browser.find_elements(By.CSS_SELECTOR, "#received tbody tr[data-tenant='hooli']")
    _fits(browser)  # observed: the received-mail page scrolled sideways at 1280 px
    browser.get(example_site.url("localhost", "/received/"))
    _fits(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "received-mail-1280.png"))
