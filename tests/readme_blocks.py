"""Every fenced code block in README.md, classified by what the README test does with it.

Used by ``tests/test_readme.py`` (which runs or checks each block) and ``tests/readme_runner.py``
(the subprocess that runs the Python blocks in a project configured by the README itself).
Importing this module needs no Django settings.

How a block is treated (an HTML comment right before the fence, invisible on GitHub, says so
where the default is not enough; keep the annotated exceptions rare):

``python`` (no comment)
    A *snippet*. Snippets run in README order in one shared namespace (like a shell session: a
    name one defines, such as ``acme`` or ``msg``, is there for the next), inside a project built
    from the README's own settings block and app files, on the embedded PostgreSQL with
    django-tenants, with the ESP APIs pointed at the loopback ``FakeESP``. Each must run without
    an exception, without a deprecation warning, and leave ``manage.py check`` free of warnings
    and errors; a message it sends must never carry another tenant's credential.
``<!-- readme-test: settings main django<6.1 -->``
    The project's settings for the Django versions named: a settings module made of the test's
    django-tenants base settings (``DATABASES``, ``SHARED_APPS``, ``TENANT_APPS``,
    ``TENANT_MODEL``, … -- what the README says the block is added to) followed by the block.
    Exactly one ``main`` block must apply to each Django version.
``<!-- readme-test: settings -->``
    An addition to the main settings: checked as base + main + this block (``django.setup()``,
    ``manage.py check``, ``TENANTMAIL`` parsed).
``<!-- readme-test: app-file -->``
    A module of the project's app; its first line is a comment naming the path
    (``# customers/models.py``). Written to disk before ``django.setup()``; migrations for the
    models are made and applied. The tenant and domain models are found in ``models.py``. The
    project's ``ROOT_URLCONF`` (the tenants' sites) is the test's own, serving the admin; an
    app-file ``<app>/urls_public.py`` becomes django-tenants' ``PUBLIC_SCHEMA_URLCONF``.
``<!-- readme-test: raises=TenantMailConfigurationError -->``
    A snippet that shows an error: it must raise that exception (or a subclass).
``<!-- readme-test: run -->``
    A ``bash`` block that is cheap and safe: run with ``bash -euo pipefail`` in an empty
    directory, this venv's ``python`` first on ``PATH``, no ``DJANGO_SETTINGS_MODULE``.
``<!-- readme-test: manage -->``
    A ``bash`` block of ``python manage.py <command> [args]`` lines, run with ``call_command``
    in the README project, in order with the snippets; a non-zero exit fails.
``<!-- readme-test: not-run: <reason> -->``
    Not executed (a reason is required). Claims in it are still checked: every ``make <target>``
    exists and every ``pip install "…[extras]"`` names extras that exist.
``text``
    Sample output; never run.
``console``
    A shell session: ``$ `` lines are the commands, the rest sample output. Annotated like a
    ``bash`` block (``run``, ``manage``, ``not-run``); only the commands are run.

A version constraint (``django<6.1``, ``django>=6.1``; several may be given) runs the block only
on those Django versions -- the suite runs on 6.1 and, through ``make matrix``, on 5.2 and 6.0.
A Python block whose heading, or the paragraph just before it, names a Django version ("On
Django 6.1, …") must say which versions it is for.

Anything else fails loudly: a fence with no language or another language, a ``bash`` block
without ``run``/``not-run``, a ``python`` block that assigns Django settings or defines models
without its annotation, an unknown annotation.
"""

from __future__ import annotations

import ast
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The harness's own tests point the runner at a synthetic README through this variable.
README = Path(os.environ.get("TENANTMAIL_README_UNDER_TEST") or ROOT / "README.md")

KINDS = ("snippet", "settings", "app-file", "run", "manage", "not-run", "text")

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_ANNOTATION = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
_VERSION = re.compile(r"^django(?P<op><=|>=|==|<|>)(?P<major>\d+)\.(?P<minor>\d+)$")
_OPS: dict[str, Callable[[tuple[int, int], tuple[int, int]], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}
# Settings a snippet must not assign: if it does, it is a settings block missing its annotation.
_SETTINGS_NAME = re.compile(
    r"^(TENANTMAIL|MAILERS|EMAIL_[A-Z_]+|ANYMAIL|LOGGING|INSTALLED_APPS|SHARED_APPS|TENANT_APPS"
    r"|TENANT_MODEL|TENANT_DOMAIN_MODEL|MIDDLEWARE|DATABASES|DEFAULT_FROM_EMAIL|SERVER_EMAIL"
    r"|ADMINS|MANAGERS)$"
)
_MODEL_BASES = {"Model", "TenantMixin", "DomainMixin", "TenantMailMixin"}


class ReadmeBlockError(Exception):
    """The README has a block the test cannot classify; the message says how to fix it."""


@dataclass(frozen=True)
class Block:
    index: int
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    kind: str
    context: str  # the heading and the paragraph before the block
    main: bool = False
    versions: tuple[tuple[str, tuple[int, int]], ...] = ()
    reason: str = ""
    raises: str = ""
    problems: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.kind}"

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"

    @property
    def path(self) -> str:
        """For an app-file: the module path from its first-line comment."""
        first = self.code.splitlines()[0] if self.code else ""
        match = re.fullmatch(r"#\s*(\S+\.py)\s*", first)
        return match.group(1) if match else ""

    def applies_to(self, version: tuple[int, int]) -> bool:
        return all(_OPS[op](version, bound) for op, bound in self.versions)

    def versions_text(self) -> str:
        return ", ".join(f"django{op}{a}.{b}" for op, (a, b) in self.versions) or "all"


def parse(text: str) -> list[Block]:
    """The fenced blocks of ``text``, each classified (``problems`` says why one is not)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        match = _FENCE.match(line)
        if not match:
            i += 1
            continue
        fence = match.group("fence")
        language = match.group("info").strip().split(" ")[0]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise ReadmeBlockError(f"README.md:{i + 1}: code fence is never closed")
        code = "\n".join(lines[i + 1 : end]) + "\n"
        context = f"{heading}\n{_paragraph_before(lines, i)}"
        blocks.append(_classify(len(blocks), i + 1, language, code, context, _annotation(lines, i)))
        i = end + 1
    return blocks


def load(path: Path = README) -> list[Block]:
    return parse(path.read_text(encoding="utf-8"))


def _paragraph_before(lines: list[str], fence_index: int) -> str:
    j = fence_index - 1
    while j >= 0 and (not lines[j].strip() or _ANNOTATION.match(lines[j])):
        j -= 1
    paragraph: list[str] = []
    while j >= 0 and lines[j].strip() and not lines[j].startswith(("#", "```", "~~~")):
        paragraph.insert(0, lines[j])
        j -= 1
    return " ".join(paragraph)


def _annotation(lines: list[str], fence_index: int) -> str | None:
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = _ANNOTATION.match(lines[j]) if j >= 0 else None
    return match.group("body") if match else None


def _classify(
    index: int, line: int, language: str, code: str, context: str, note: str | None
) -> Block:
    problems: list[str] = []
    kind = ""
    main = False
    reason = ""
    raises = ""
    versions: list[tuple[str, tuple[int, int]]] = []
    words = (note or "").split()
    if note is not None and note.startswith("not-run"):
        kind = "not-run"
        reason = note.removeprefix("not-run").lstrip(":").strip()
        if not reason:
            problems.append("`not-run` needs a reason: <!-- readme-test: not-run: why -->")
        words = []
    for word in words:
        version = _VERSION.match(word)
        if version:
            bound = (int(version.group("major")), int(version.group("minor")))
            versions.append((version.group("op"), bound))
        elif word == "main":
            main = True
        elif re.fullmatch(r"raises=[A-Za-z_]\w*", word) and not raises:
            raises = word.removeprefix("raises=")
        elif word in ("settings", "app-file", "run", "manage") and not kind:
            kind = word
        else:
            problems.append(f"unknown annotation word {word!r} (see tests/readme_blocks.py)")

    if not language:
        problems.append("fence has no language: use ```python, ```bash or ```text (output)")
    elif language == "text":
        kind = kind or "text"
    elif language == "python":
        kind = kind or "snippet"
        if kind not in ("snippet", "settings", "app-file", "not-run"):
            problems.append(f"`{kind}` does not apply to a python block")
    elif language in ("bash", "console"):
        if kind not in ("run", "manage", "not-run"):
            problems.append(
                f"a {language} block must say how it is run: <!-- readme-test: run --> (cheap and "
                "safe), <!-- readme-test: manage --> (manage.py commands, run in the README "
                "project) or <!-- readme-test: not-run: why -->"
            )
    else:
        problems.append(f"language {language!r} is not one the README test knows")

    if raises and kind != "snippet":
        problems.append("`raises=` only applies to a python snippet")
    if main and kind != "settings":
        problems.append("`main` only applies to a settings block")
    if kind == "app-file" and not re.fullmatch(r"#\s*\S+/\S+\.py\s*", code.splitlines()[0]):
        problems.append("an app-file must start with a comment naming it: # customers/models.py")
    if language == "python" and kind == "snippet":
        problems.extend(_snippet_problems(code))
    named = re.search(r"\bDjango \d+\.\d+", context)
    if language == "python" and named and not versions:
        problems.append(
            f"its heading or the paragraph before it names {named.group()}: say which versions "
            "the block is for, e.g. <!-- readme-test: django<6.1 -->"
        )
    return Block(
        index=index,
        line=line,
        language=language,
        code=code,
        kind=kind or "unknown",
        context=context,
        main=main,
        versions=tuple(versions),
        reason=reason,
        raises=raises,
        problems=tuple(problems),
    )


def _snippet_problems(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        return [f"not valid Python as written: {error.msg} (line {error.lineno} of the block)"]
    problems = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and _SETTINGS_NAME.match(target.id):
                problems.append(
                    f"assigns the setting {target.id}: annotate the block "
                    "<!-- readme-test: settings --> so it is checked as settings"
                )
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(b, ast.Attribute) and b.attr in _MODEL_BASES)
            or (isinstance(b, ast.Name) and b.id in _MODEL_BASES)
            for b in node.bases
        ):
            problems.append(
                f"defines the model {node.name}: make it an app-file "
                "(<!-- readme-test: app-file --> and a first line # app/models.py)"
            )
    return problems


def make_targets(code: str) -> set[str]:
    """Targets of every ``make`` command in shell ``code``."""
    pattern = r"(?:^|&&|;|\|\||#|:)\s*make\s+([a-z][\w-]*)"
    return set(re.findall(pattern, code, flags=re.MULTILINE))


def prose_make_targets(text: str) -> set[str]:
    """Targets of ``make`` commands quoted as inline code in prose (`make demo`)."""
    return set(re.findall(r"`make\s+([a-z][\w-]*)", text))


def pip_extras(code: str) -> set[str]:
    """Extras named in ``pip install`` requirements in ``code``."""
    extras: set[str] = set()
    for command in re.findall(r"pip install [^\n#]*", code):
        for group in re.findall(r"tenantmail\[([^\]]*)\]", command):
            extras.update(e.strip() for e in group.split(",") if e.strip())
    return extras


def shell_code(block: Block) -> str:
    """The commands of a shell block: a console block's ``$ `` lines without the prompt."""
    if block.language != "console":
        return block.code
    commands = [line[2:] for line in block.code.splitlines() if line.startswith("$ ")]
    return "\n".join(commands) + "\n"


def manage_commands(code: str) -> list[list[str]]:
    """``[command, *args]`` for each ``python manage.py …`` line of a ``manage`` block."""
    import shlex

    commands = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] in ("python", "python3"):
            words = words[1:]
        if not words or words[0] not in ("manage.py", "./manage.py", "django-admin"):
            raise ReadmeBlockError(f"not a manage.py command: {line!r}")
        if len(words) < 2:
            raise ReadmeBlockError(f"no command name in {line!r}")
        commands.append(words[1:])
    return commands
