"""README.md runs as written, on the Django versions it names.

Every fenced block is classified by ``tests/readme_blocks.py`` (its docstring documents the
annotations) and gets a test here: Python blocks run in a project built from the README's own
settings and app files (``tests/readme_runner.py``, a subprocess), cheap bash blocks are executed,
the rest are checked for the claims that can be checked cheaply. A block nobody has classified
fails; nothing is skipped silently. Plus the README's other checkable claims: the settings table
against ``tenantmail.conf``, make targets, extras, classifiers, key generation without settings.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import django
import pytest
from cryptography.fernet import Fernet

from tenantmail import conf, keygen
from tests import readme_blocks
from tests.readme_blocks import README, ROOT, Block

VERSION = (django.VERSION[0], django.VERSION[1])
CHECK_ID = r"tenantmail\.[A-Z]\d{3}"  # a system check's ID: tenantmail.E001, .W003, .Q001
BLOCKS = readme_blocks.load()
README_TEXT = README.read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _settings_free_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # `python` in a README command is this venv's interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("readme") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.readme_runner", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if not out.exists():
        pytest.fail(f"the README runner crashed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    results: dict[str, dict[str, Any]] = json.loads(out.read_text())
    return results


def _run_by_the_runner(block: Block) -> bool:
    return (block.language == "python" and block.kind != "not-run") or block.kind == "manage"


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block: Block, request: pytest.FixtureRequest) -> None:
    assert not block.problems, f"{block.where}: " + "; ".join(block.problems)
    if block.kind == "text":
        return  # sample output
    if block.kind == "not-run":
        _check_not_run(block)
        return
    if not block.applies_to(VERSION):
        pytest.skip(f"{block.where} is for {block.versions_text()}, not Django {VERSION}")
    if block.kind == "run":
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_blocks.shell_code(block)],
            cwd=request.getfixturevalue("tmp_path"),
            env=_settings_free_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{block.where} exited {proc.returncode}:\n{proc.stderr}"
        return
    result = request.getfixturevalue("readme_run").get(str(block.line))
    assert result is not None, f"{block.where} was not run by tests/readme_runner.py"
    assert result["status"] == "passed", f"{block.where} failed:\n{result['detail']}"


def _check_not_run(block: Block) -> None:
    missing = readme_blocks.make_targets(readme_blocks.shell_code(block)) - _makefile_targets()
    assert not missing, f"{block.where} names make targets the Makefile lacks: {missing}"
    extras = readme_blocks.pip_extras(block.code)
    unknown = extras - set(PYPROJECT["project"]["optional-dependencies"])
    assert not unknown, f"{block.where} installs extras pyproject.toml lacks: {unknown}"


def test_the_snippets_really_send_through_the_fake_esp(
    readme_run: dict[str, dict[str, Any]],
) -> None:
    # Guards the harness itself: the send snippets reached the loopback ESP, with acme's key
    # on acme's mail.
    sent = [m for r in readme_run.values() for m in r.get("sent", [])]
    assert any("metadata={'tenant': 'acme'}" in m and "…1e5b'" in m for m in sent), sent
    assert any("…0000'" in m for m in sent), sent  # the platform account


# -- the harness fails loudly on what it does not know ----------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```\nx = 1\n```\n", "no language"),
        ("```sh\nls\n```\n", "language 'sh'"),
        ("```console\n$ ls\n```\n", "a console block must say how it is run"),
        ("```bash\nmake tenantmail\n```\n", "must say how it is run"),
        ('```python\nTENANTMAIL = {"METADATA_KEY": None}\n```\n', "assigns the setting"),
        (
            "```python\nclass Client(TenantMixin):\n    pass\n```\n",
            "defines the model Client",
        ),
        ("<!-- readme-test: not-run -->\n```bash\nmake demo\n```\n", "needs a reason"),
        ("<!-- readme-test: settngs -->\n```python\nX = 1\n```\n", "unknown annotation"),
        ("### On Django 6.1\n\n```python\nx = 1\n```\n", "names Django 6.1"),
        ("# A\n\nOn Django 5.2:\n\n```python\nx = 1\n```\n", "names Django 5.2"),
        ("```python\nsend_mail(..., connection=c\n```\n", "not valid Python"),
        ("<!-- readme-test: app-file -->\n```python\nx = 1\n```\n", "must start with a comment"),
    ],
)
def test_unclassified_blocks_fail(text: str, problem: str) -> None:
    (block,) = readme_blocks.parse(text)
    assert any(problem in p for p in block.problems), block.problems


def test_annotations_are_read() -> None:
    text = (
        "<!-- readme-test: settings main django>=6.1 -->\n\n```python\nX = 1\n```\n"
        "<!-- readme-test: not-run: slow -->\n```bash\nmake demo\n```\n"
    )
    settings, bash = readme_blocks.parse(text)
    assert (settings.kind, settings.main, settings.problems) == ("settings", True, ())
    assert settings.applies_to((6, 1))
    assert not settings.applies_to((6, 0))
    assert (bash.kind, bash.reason) == ("not-run", "slow")


def test_a_console_block_runs_only_its_commands() -> None:
    text = (
        "<!-- readme-test: run -->\n"
        "```console\n$ python -V   # a comment\nPython 3.12\n$ make x\n```\n"
    )
    (block,) = readme_blocks.parse(text)
    assert readme_blocks.shell_code(block) == "python -V   # a comment\nmake x\n"
    assert readme_blocks.manage_commands("python manage.py check --deploy  # ok\n") == [
        ["check", "--deploy"]
    ]
    with pytest.raises(readme_blocks.ReadmeBlockError):
        readme_blocks.manage_commands("rm -rf build\n")


def test_every_python_block_gets_a_result(readme_run: dict[str, dict[str, Any]]) -> None:
    runner = {str(b.line) for b in BLOCKS if _run_by_the_runner(b)}
    assert runner <= set(readme_run), runner - set(readme_run)


# -- the README's other checkable claims ------------------------------------------------------


def test_settings_table_lists_exactly_the_known_keys() -> None:
    section = README_TEXT.split("## Settings (`TENANTMAIL`)", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))
    assert documented == conf._KNOWN_KEYS, (
        f"README lacks {sorted(conf._KNOWN_KEYS - documented)}, "
        f"conf lacks {sorted(documented - conf._KNOWN_KEYS)}"
    )


def test_every_make_target_the_readme_names_exists() -> None:
    named = readme_blocks.prose_make_targets(README_TEXT)
    for block in BLOCKS:
        if block.language in ("bash", "console"):
            named |= readme_blocks.make_targets(readme_blocks.shell_code(block))
    assert {"demo", "serve", "test"} <= named  # the check sees them
    missing = named - _makefile_targets()
    assert not missing, missing


def test_every_extra_the_readme_names_exists() -> None:
    extras = readme_blocks.pip_extras(README_TEXT)
    assert extras, "the README shows no pip install with extras"
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_classifiers_name_the_django_versions_the_readme_names() -> None:
    classified = {
        c.rsplit(" :: ", 1)[1]
        for c in PYPROJECT["project"]["classifiers"]
        if c.startswith("Framework :: Django :: ")
    }
    requires = re.search(r"^Requires Python .*, Django ([\d. /]+),", README_TEXT, re.MULTILINE)
    assert requires is not None
    assert classified == {v.strip() for v in requires.group(1).split("/")}
    assert f"{VERSION[0]}.{VERSION[1]}" in classified
    python = re.search(r"^Requires Python ≥ (\d+\.\d+),", README_TEXT, re.MULTILINE)
    assert python is not None
    assert PYPROJECT["project"]["requires-python"] == f">={python.group(1)}"


def test_testing_extra_declares_what_tenantmail_testing_imports() -> None:
    testing = " ".join(PYPROJECT["project"]["optional-dependencies"]["testing"])
    source = (ROOT / "tenantmail" / "testing.py").read_text(encoding="utf-8")
    for module in ("aiosmtpd", "trustme"):
        assert re.search(rf"^\s*(from|import) {module}\b", source, re.MULTILINE)
        assert module in testing


# -- key generation needs no settings (it raised ImproperlyConfigured) -------------------------


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "tenantmail.keygen"],
        [sys.executable, "-c", "from tenantmail.keygen import generate_key; print(generate_key())"],
    ],
)
def test_keygen_runs_without_settings(command: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        command, cwd=tmp_path, env=_settings_free_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    Fernet(key)  # a valid key
    assert proc.stderr == ""


def test_importing_tenantmail_needs_no_settings(tmp_path: Path) -> None:
    code = "import tenantmail; print(tenantmail.__version__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_settings_free_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_crypto_generate_key_still_works() -> None:
    from tenantmail.crypto import generate_key
    from tenantmail.keygen import generate_key as settings_free

    assert generate_key is settings_free
    fernet = Fernet(generate_key())
    assert fernet.decrypt(fernet.encrypt(b"x")) == b"x"
    assert generate_key() != generate_key()


def test_keygen_main_prints_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    keygen.main()
    Fernet(capsys.readouterr().out.strip())


def test_package_attributes_are_lazy() -> None:
    import tenantmail
    from tenantmail.tenancy import sending_as

    assert tenantmail.sending_as is sending_as
    for name in tenantmail.__all__:
        assert callable(getattr(tenantmail, name)), name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tenantmail.no_such_name  # type: ignore[attr-defined]


# -- an additional settings block is checked on top of the main one ---------------------------


@pytest.mark.parametrize(
    ("addition", "status", "detail"),
    [
        ('TENANTMAIL = {**TENANTMAIL, "METADATA_KEY": "customer"}\n', "passed", ""),
        ('TENANTMAIL = {**TENANTMAIL, "NO_SUCH_KEY": 1}\n', "failed", "NO_SUCH_KEY"),
        ('LOGGING = {"version": 2}\n', "failed", "version"),
    ],
)
def test_additional_settings_blocks_are_checked(
    addition: str, status: str, detail: str, tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_TEXT}\n<!-- readme-test: settings -->\n```python\n{addition}```\n")
    (added,) = [b for b in readme_blocks.load(readme) if b.code == addition]
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.readme_runner", str(out), "--settings", str(added.line)],
        cwd=ROOT,
        env={**os.environ, "TENANTMAIL_README_UNDER_TEST": str(readme)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.exists(), proc.stderr
    result = json.loads(out.read_text())
    assert result["status"] == status, result["detail"]
    assert detail in result["detail"]


@pytest.mark.skipif(VERSION < (6, 1), reason="MAILERS is new in Django 6.1")
def test_get_connection_with_a_backend_path_raises_under_mailers(settings: Any) -> None:
    # Why the README shows get_connection() only for 5.2 / 6.0: Django 6.1 refuses a backend
    # path once MAILERS is set (the test settings set it, like the README's 6.1 block).
    from django.core.mail import get_connection

    assert hasattr(settings, "MAILERS")
    with (
        pytest.warns(PendingDeprecationWarning, match="get_connection"),
        pytest.raises(RuntimeError, match="not supported with MAILERS"),
    ):
        get_connection("tenantmail.backends.TenantBackend", tenant="acme")


def test_every_dotted_name_the_readme_quotes_exists() -> None:
    quoted = set(re.findall(r"[`\"](tenantmail(?:\.[A-Za-z_]\w*)+)", README_TEXT))
    names = {n for n in quoted if not re.fullmatch(CHECK_ID, n)}  # check IDs: tested below
    assert "tenantmail.backends.TenantBackend" in names
    missing = []
    for name in sorted(names):
        module, _, attr = name, "", ""
        while True:
            try:
                obj: Any = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, last = module.rpartition(".")
                attr = f"{last}.{attr}" if attr else last
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(name)
    assert not missing, missing


def test_every_check_id_and_command_the_readme_names_exists() -> None:
    from django.core.management import get_commands

    checks_source = "".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "tenantmail").rglob("*.py")
    )
    check_ids = set(re.findall(CHECK_ID, README_TEXT))
    assert {"tenantmail.W003", "tenantmail.Q001"} <= check_ids  # the check sees them
    for check_id in check_ids:
        assert f'id="{check_id}"' in checks_source, check_id
    # Django's, django-tenants' (migrate_schemas), django-tasks-db's (db_worker) and ours: the
    # apps the README installs are all in the test settings.
    commands = get_commands()
    for command in set(re.findall(r"manage\.py (\w+)", README_TEXT)):
        assert command in commands, command
        if command.startswith("tenantmail"):
            assert commands[command] == "tenantmail", command


def test_pool_stats_are_the_ones_the_readme_lists() -> None:
    from tenantmail import pool

    section = README_TEXT.split("## Observability", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"`tenantmail\.pool\.stats\(\)` \(([^)]*)\)", section)
    assert listed is not None
    names = {n.strip() for n in listed.group(1).replace("\n", " ").split(",")}
    assert names == {f.name for f in dataclasses.fields(pool.stats())}


def test_the_runner_catches_a_message_with_another_tenants_credential(tenants: Any) -> None:
    from tenantmail.testing import ReceivedMessage
    from tests.conftest import ACME_KEY, GLOBEX_TOKEN
    from tests.readme_runner import PLATFORM_KEY, _foreign_credentials

    def received(credential: str, tenant: str | None) -> ReceivedMessage:
        metadata = {} if tenant is None else {"tenant": tenant}
        return ReceivedMessage("mailgun", credential, None, "", [], "", metadata, "", 1, 0.0)

    fine = [
        received(ACME_KEY, "acme"),
        received("key-override-1234", "acme"),  # a per-send override is nobody's stored key
        received(PLATFORM_KEY, "initech"),  # no config of its own: the platform account
        received(PLATFORM_KEY, None),  # platform mail
    ]
    assert _foreign_credentials(fine) == []
    wrong = [received(GLOBEX_TOKEN, "acme"), received(PLATFORM_KEY, "acme")]
    problems = _foreign_credentials(wrong)
    assert len(problems) == 2
    assert "'globex''s credential" in problems[0]
    assert "the platform's credential" in problems[1]
    assert GLOBEX_TOKEN not in " ".join(problems)


# -- the runner itself, on a README with blocks that must pass and blocks that must fail -------

SELF_TEST_BLOCKS = [
    # (annotation, language, code, expected status, expected text in the detail)
    ("manage", "bash", "python manage.py tenantmail_reencrypt\n", "passed", ""),
    (
        "manage",
        "console",
        "$ python manage.py check --fail-level ERROR   # a comment\nSystem check identified ...\n",
        "passed",
        "",
    ),
    ("manage", "bash", "python manage.py tenantmail_no_such_command\n", "failed", "Unknown"),
    (
        "raises=UnknownTenantError",
        "python",
        'from tenantmail import mailer\n\nmailer(tenant="nope").send_messages([msg])\n',
        "passed",
        "",
    ),
    ("raises=ValueError", "python", "x = 1\n", "failed", "should raise ValueError"),
    (
        "",
        "python",
        'import warnings\n\nwarnings.warn("old", DeprecationWarning, stacklevel=1)\n',
        "failed",
        "DeprecationWarning",
    ),
    ("", "python", "undefined_name\n", "failed", "NameError"),
    (
        "",
        "python",
        "from customers.models import Client\nfrom tenantmail import mailer\n\ninitech = Client("
        'schema_name="initech", name="Initech", mail_backend="mailgun",\n                 '
        'mail_options={"api_key": "key-initech-7777", "sender_domain": "mg.initech.example"})\n'
        'initech.save()\nmailer(tenant="initech", api_key="key-acme-example-1e5b").send_messages'
        "([msg])\n",
        "failed",
        "stamped tenant='initech' went out with 'acme''s credential",
    ),
    ("", "python", "x = 2\n", "passed", ""),
]


def test_the_runner_passes_and_fails_what_it_should(tmp_path: Path) -> None:
    parts = [README_TEXT]
    for note, language, code, *_ in SELF_TEST_BLOCKS:
        comment = f"<!-- readme-test: {note} -->\n" if note else ""
        parts.append(f"\n{comment}```{language}\n{code}```\n")
    readme = tmp_path / "README.md"
    readme.write_text("".join(parts))
    added = readme_blocks.load(readme)[-len(SELF_TEST_BLOCKS) :]
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.readme_runner", str(out)],
        cwd=ROOT,
        env={**os.environ, "TENANTMAIL_README_UNDER_TEST": str(readme)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.exists(), proc.stderr[-6000:]
    results = json.loads(out.read_text())
    for block, (*_, status, detail) in zip(added, SELF_TEST_BLOCKS, strict=True):
        assert not block.problems, block.problems
        result = results[str(block.line)]
        assert result["status"] == status, (block.code, result["detail"])
        assert detail in result["detail"], (block.code, result["detail"])
    # An earlier failure is reported on the blocks after it, so a cascade is easy to read.
    assert "an earlier block failed too" in results[str(added[-2].line)]["detail"]
    assert "key-acme-example-1e5b" not in out.read_text()  # credentials are only shown masked


def test_every_repository_path_and_link_the_readme_names_exists() -> None:
    top = r"(?:tenantmail|tests|example_site|scripts|benchmarks)"
    paths = set(re.findall(rf"`({top}/[\w./-]*)`", README_TEXT))
    paths |= set(re.findall(r"\]\(([^)#:]+)\)", README_TEXT))  # relative links
    assert "tests/test_readme.py" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing
