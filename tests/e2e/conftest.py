"""Fixtures for the browser test: the example site in a subprocess, and headless Chromium.

The site runs as ``make serve`` runs it (``python -m example_site.manage serve``: migrations,
seeded tenants, fake ESP and SMTP servers in the web server's process) against its own, fresh
database on the test suite's PostgreSQL server, which is dropped afterwards. The test process
never imports the example site's settings (pytest runs with ``tests.settings``).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1700,1000",
    # *.localhost is loopback anyway; this also rules out an IPv6-first attempt.
    "--host-resolver-rules=MAP localhost 127.0.0.1, MAP *.localhost 127.0.0.1",
)
STARTUP_TIMEOUT = 90.0


@dataclass(frozen=True)
class Site:
    port: int
    admin_username: str
    admin_password: str
    log: Path

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def get_json(self, host: str, path: str) -> Any:
        """GET from the test process (Host header routes to the tenant, as in a browser)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": f"{host}:{self.port}"})
            response = conn.getresponse()
            assert response.status == 200, f"GET {host}{path}: {response.status}"
            return json.loads(response.read())
        finally:
            conn.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _admin_connection(url: str) -> psycopg.Connection[Any]:
    # The maintenance database of the suite's server, for CREATE/DROP DATABASE.
    return psycopg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")), autocommit=True)


@pytest.fixture(scope="session")
def site_database() -> Iterator[str]:
    """A fresh database for the example site, on the server the suite already uses."""
    # tests.settings (imported by pytest-django before any test) has put the server in the env.
    server_url = os.environ["DATABASE_URL"]
    name = f"tenantmail_e2e_{os.getpid()}_{secrets.token_hex(3)}"
    with _admin_connection(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with _admin_connection(server_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_until_ready(site: Site, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the example site exited with {process.returncode}:\n{site.log.read_text()}"
            )
        try:
            if site.get_json("localhost", "/received.json")["running"]:
                return
        except (OSError, AssertionError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"the example site did not start in {STARTUP_TIMEOUT}s:\n{site.log.read_text()}")


@pytest.fixture(scope="session")
def example_site(site_database: str) -> Iterator[Site]:
    ARTIFACTS.mkdir(exist_ok=True)
    site = Site(
        port=_free_port(),
        admin_username="admin",
        admin_password=secrets.token_urlsafe(12),
        log=ARTIFACTS / "example-site.log",
    )
    env = {
        **os.environ,
        "DATABASE_URL": site_database,
        "DJANGO_SETTINGS_MODULE": "example_site.settings",
        "EXAMPLE_ADMIN_PASSWORD": site.admin_password,
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "example_site.manage", "serve", "--port", str(site.port)]
    with site.log.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_ready(site, process)
        yield site
    finally:
        process.terminate()  # SIGTERM: the serve command stops its fake servers and exits
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMEDRIVER.exists():
        pytest.fail(
            f"{CHROMIUM} is installed but {CHROMEDRIVER} is not: run scripts/ensure-chromium.sh "
            "(apt-get install chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
