"""Run README.md's Python blocks in a project the README itself configures (a subprocess).

``python -m tests.readme_runner RESULTS.json`` (from the repository root; ``tests/test_readme.py``
starts it): builds a throwaway project from the README's ``settings main`` block for this Django
version and its ``app-file`` blocks, on a fresh database of the embedded PostgreSQL with
django-tenants, makes and applies the migrations, then runs every snippet and ``manage`` block in
README order, the snippets in one namespace. ESP API hosts are answered by a loopback ``FakeESP``
(faked at the HTTP transport, the network edge; any other host is refused), so nothing leaves the
machine. Writes ``{line: {"status": "passed" | "failed" | "skipped", "detail": ...}}``.

``python -m tests.readme_runner RESULTS.json --settings LINE`` checks one additional settings
block (base + main + that block): ``django.setup()``, system checks, ``TENANTMAIL`` parsed.

See ``tests/readme_blocks.py`` for how blocks are annotated.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import django

from tests.readme_blocks import Block, load, manage_commands, shell_code

VERSION = (django.VERSION[0], django.VERSION[1])
PLATFORM_KEY = "key-platform-readme-0000"
SECRET_OPTIONS = ("api_key", "server_token", "password", "secret_key", "api_token")
# The real API hosts Anymail talks to, answered by FakeESP (its paths mirror theirs).
ESP_HOSTS = {
    "https://api.mailgun.net/": "mailgun/",
    "https://api.eu.mailgun.net/": "mailgun/",
    "https://api.postmarkapp.com/": "postmark/",
    "https://api.sendgrid.com/": "sendgrid/",
}

Results = dict[str, dict[str, Any]]

BASE_SETTINGS = """\
# The README test's django-tenants project: what the README's settings blocks are added to.
SECRET_KEY = "readme-test-not-secret"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["*"]
DATABASES = {databases!r}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
SHARED_APPS = [
    "django_tenants",
    {app!r},
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
]
TENANT_APPS = ["django.contrib.contenttypes"]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]
TENANT_MODEL = {tenant_model!r}
TENANT_DOMAIN_MODEL = {domain_model!r}
MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {{
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        }},
    }}
]
ROOT_URLCONF = "readme_urls"
"""

URLS = """\
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""


def _failure(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)[-12:])


@contextmanager
def _strict_warnings() -> Iterator[None]:
    # Django 6.1's RemovedInDjango2028Warning is a PendingDeprecationWarning: the README must not
    # show (and tenantmail must not cause) either kind.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", PendingDeprecationWarning)
        yield


class Project:
    """The throwaway project on disk: settings module, urls, the README's app."""

    def __init__(self, blocks: list[Block], root: Path, databases: dict[str, Any]) -> None:
        self.root = root
        app_files = [b for b in blocks if b.kind == "app-file" and b.applies_to(VERSION)]
        self.app_files = app_files
        models = [b for b in app_files if b.path.endswith("/models.py")]
        if len(models) != 1:
            raise LookupError(
                f"expected one app-file block for models.py, found {len(models)}: the README "
                "test needs the tenant and domain models"
            )
        self.models_block = models[0]
        self.app = self.models_block.path.split("/")[0]
        tenant, domain = _tenant_models(self.models_block.code)
        self.base = BASE_SETTINGS.format(
            databases=databases,
            app=self.app,
            tenant_model=f"{self.app}.{tenant}",
            domain_model=f"{self.app}.{domain}",
        )
        # django-tenants' public-site urlconf, when the README shows one as an app-file.
        public_urls = f"{self.app}/urls_public.py"
        if any(b.path == public_urls for b in app_files):
            self.base += f"PUBLIC_SCHEMA_URLCONF = {self.app + '.urls_public'!r}\n"

    def write(self, settings_blocks: list[Block]) -> None:
        app_dir = self.root / self.app
        (app_dir / "migrations").mkdir(parents=True, exist_ok=True)
        (app_dir / "__init__.py").write_text("")
        (app_dir / "migrations" / "__init__.py").write_text("")
        for block in self.app_files:
            target = self.root / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        parts = [self.base]
        for block in settings_blocks:
            parts.append(f"\n# ---- {block.where}\n{block.code}")
        (self.root / "readme_settings.py").write_text("".join(parts))
        (self.root / "readme_urls.py").write_text(URLS)
        sys.path.insert(0, str(self.root))
        os.environ["DJANGO_SETTINGS_MODULE"] = "readme_settings"


def _tenant_models(code: str) -> tuple[str, str]:
    tenant = domain = ""
    for node in ast.parse(code).body:
        if isinstance(node, ast.ClassDef):
            bases = {getattr(b, "id", "") or getattr(b, "attr", "") for b in node.bases}
            if "TenantMixin" in bases:
                tenant = node.name
            if "DomainMixin" in bases:
                domain = node.name
    if not (tenant and domain):
        raise LookupError("models.py must define a TenantMixin model and a DomainMixin model")
    return tenant, domain


# -- database ------------------------------------------------------------------------------


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from example_site.embedded_pg import database_url

    return database_url("tests")


def _admin_connect(db: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(
        dbname="postgres",
        user=db["USER"],
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        autocommit=True,
        **db["OPTIONS"],
    )


def _create_database() -> dict[str, Any]:
    from example_site.embedded_pg import django_database

    db = django_database(_server_url())
    db["NAME"] = f"readme_{uuid.uuid4().hex[:12]}"
    with _admin_connect(db) as conn:
        conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    return db


def _drop_database(db: dict[str, Any]) -> None:
    with _admin_connect(db) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}" WITH (FORCE)')


# -- the network edge ---------------------------------------------------------------------


def _route_esp_hosts(base_url: str) -> None:
    """Answer the ESPs' real API hosts with FakeESP; refuse every other host."""
    import requests
    from requests.adapters import HTTPAdapter

    original: Callable[..., Any] = HTTPAdapter.send

    def send(self: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
        for real, fake_path in ESP_HOSTS.items():
            if request.url.startswith(real):
                request.url = base_url + fake_path + request.url[len(real) :]
                break
        else:
            if not request.url.startswith(base_url):
                host = urlsplit(request.url).netloc
                raise requests.ConnectionError(f"README test: no network access to {host}")
        return original(self, request, *args, **kwargs)

    HTTPAdapter.send = send  # type: ignore[method-assign]


# -- checks after each block -------------------------------------------------------------


def _check_messages() -> list[str]:
    from django.core.checks import WARNING, run_checks

    return [str(m) for m in run_checks() if m.level >= WARNING and not m.is_silenced()]


def _foreign_credentials(messages: list[Any]) -> list[str]:
    """Messages stamped as tenant X that carry another tenant's (or, for X with its own
    credential, the platform's) stored credential."""
    from django_tenants.utils import get_tenant_model

    from tenantmail.conf import get_settings
    from tenantmail.testing import mask

    key = get_settings().metadata_key
    owners: dict[str, str] = {PLATFORM_KEY: ""}
    own: set[str] = set()
    for tenant in get_tenant_model().objects.all():
        options = getattr(tenant, "mail_options", None) or {}
        for name in SECRET_OPTIONS:
            value = options.get(name) if isinstance(options, dict) else None
            if isinstance(value, str) and value:
                owners[value] = tenant.schema_name
                own.add(tenant.schema_name)
    problems = []
    for message in messages:
        stamped = message.metadata.get(key) if key else None
        owner = owners.get(message.credential)
        if stamped is None or owner is None or owner == stamped:
            continue
        if owner == "" and stamped not in own:
            continue  # a tenant without its own credential on the platform account: intended
        problems.append(
            f"a message stamped {key}={stamped!r} went out with "
            f"{'the platform' if owner == '' else repr(owner)}'s credential "
            f"{mask(message.credential)}"
        )
    return problems


# -- the run -----------------------------------------------------------------------------


def _manage(block: Block) -> None:
    from django.core.management import call_command

    for command in manage_commands(shell_code(block)):
        try:
            call_command(*command)
        except SystemExit as exit:
            if exit.code:
                raise RuntimeError(f"manage.py {' '.join(command)} exited {exit.code}") from exit


def _exec(block: Block, namespace: dict[str, Any]) -> None:
    try:
        exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102
    except Exception as error:
        names = {cls.__name__ for cls in type(error).__mro__}
        if block.raises and block.raises in names:
            return
        raise
    if block.raises:
        raise AssertionError(f"the block should raise {block.raises} and did not")


def _run_steps(steps: list[Block], results: Results, esp: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "readme"}
    failed_before: str | None = None
    for block in steps:
        seen = len(esp.messages)
        try:
            with _strict_warnings():
                if block.kind == "manage":
                    _manage(block)
                else:
                    _exec(block, namespace)
            problems = _check_messages()
            problems += _foreign_credentials(esp.messages[seen:])
        except BaseException as error:
            problems = [_failure(error)]
        if not problems:
            sent = [repr(m) for m in esp.messages[seen:]]
            results[str(block.line)] = {"status": "passed", "detail": "", "sent": sent}
            continue
        if failed_before:
            # Blocks share one namespace: say so, so a cascade is read from its first failure.
            problems.append(f"(an earlier block failed too: {failed_before})")
        results[str(block.line)] = {"status": "failed", "detail": "\n".join(problems)}
        failed_before = failed_before or block.where


def _setup(project: Project, settings_blocks: list[Block]) -> None:
    project.write(settings_blocks)
    os.environ["MAILGUN_KEY"] = PLATFORM_KEY
    from tenantmail.keygen import generate_key

    os.environ["TENANTMAIL_KEY"] = generate_key()
    with _strict_warnings():
        django.setup()


def run(out: Path) -> None:
    blocks = [b for b in load() if not b.problems]
    results: Results = {}
    python = [
        b for b in blocks if (b.language == "python" and b.kind != "not-run") or b.kind == "manage"
    ]
    for block in python:
        if not block.applies_to(VERSION):
            results[str(block.line)] = {"status": "skipped", "detail": block.versions_text()}
    applicable = [b for b in python if b.applies_to(VERSION)]
    mains = [b for b in applicable if b.kind == "settings" and b.main]
    setup_blocks = [b for b in applicable if b.kind in ("settings", "app-file")]

    def fail_all(detail: str, which: list[Block]) -> None:
        for block in which:
            results.setdefault(str(block.line), {"status": "failed", "detail": detail})

    if len(mains) != 1:
        fail_all(
            f"{len(mains)} `settings main` blocks apply to Django {VERSION}; exactly one must",
            applicable,
        )
        out.write_text(json.dumps(results))
        return

    db = _create_database()
    try:
        with tempfile.TemporaryDirectory(prefix="readme-project-") as tmp:
            try:
                project = Project(blocks, Path(tmp), {"default": db})
                _setup(project, mains)
                from django.core.management import call_command

                call_command("makemigrations", project.app, verbosity=0)
                call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
                from django_tenants.utils import get_public_schema_name, get_tenant_model

                get_tenant_model()(schema_name=get_public_schema_name()).save(verbosity=0)
                with _strict_warnings():
                    problems = _check_messages()
            except BaseException as error:
                fail_all(f"setting up the project failed:\n{_failure(error)}", applicable)
                out.write_text(json.dumps(results))
                return
            detail = "\n".join(problems)
            for block in [*mains, *project.app_files]:
                results[str(block.line)] = {
                    "status": "failed" if problems else "passed",
                    "detail": f"system checks: {detail}" if problems else "",
                }
            for block in setup_blocks:
                if block.kind == "settings" and not block.main:
                    results[str(block.line)] = _check_settings_in_subprocess(block, out)

            from tenantmail.testing import FakeESP

            with FakeESP() as esp:
                _route_esp_hosts(esp.base_url)
                steps = [b for b in applicable if b.kind in ("snippet", "manage")]
                _run_steps(steps, results, esp)
            from django.db import connections

            connections.close_all()
    finally:
        _drop_database(db)
    out.write_text(json.dumps(results))


def _check_settings_in_subprocess(block: Block, out: Path) -> dict[str, Any]:
    import subprocess

    extra = out.with_name(f"settings-{block.line}.json")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.readme_runner", str(extra), "--settings", str(block.line)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if not extra.exists():
        return {"status": "failed", "detail": proc.stderr[-3000:]}
    result: dict[str, Any] = json.loads(extra.read_text())
    return result


def check_settings(out: Path, line: int) -> None:
    """One additional settings block on top of the main one: setup, checks, TENANTMAIL."""
    blocks = [b for b in load() if not b.problems]
    block = next(b for b in blocks if b.line == line)
    mains = [b for b in blocks if b.kind == "settings" and b.main and b.applies_to(VERSION)]
    try:
        with tempfile.TemporaryDirectory(prefix="readme-settings-") as tmp:
            db = {"ENGINE": "django_tenants.postgresql_backend", "NAME": "unused"}
            project = Project(blocks, Path(tmp), {"default": db})
            _setup(project, [*mains, block])
            from tenantmail.conf import load_settings

            load_settings()
            with _strict_warnings():
                problems = _check_messages()
    except BaseException as error:
        out.write_text(json.dumps({"status": "failed", "detail": _failure(error)}))
        return
    status = "failed" if problems else "passed"
    out.write_text(json.dumps({"status": status, "detail": "\n".join(problems)}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--settings":
        check_settings(Path(sys.argv[1]), int(sys.argv[3]))
    else:
        run(Path(sys.argv[1]))
