"""Settings for mypy's Django plugin: no database server is started to type-check."""

import os

os.environ.setdefault("DATABASE_URL", "postgresql://mypy@localhost/mypy")

from tests.settings import *  # noqa: F403
