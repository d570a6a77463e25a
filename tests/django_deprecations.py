"""pytest plugin (``-p tests.django_deprecations`` in pyproject.toml): Django's pending
deprecations are errors too.

``error::DeprecationWarning`` misses Django 6.1's ``RemovedInDjango2028Warning``
(``get_connection()``, ``connection=``, ``fail_silently``, ``EMAIL_*`` settings, ...): it is a
``PendingDeprecationWarning``. Our own code must not trigger it either, so every
``RemovedInDjango…Warning`` class this Django has is an error. Named one by one, not as all
``PendingDeprecationWarning``: other libraries' pending deprecations are not ours to fix.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from django.utils import deprecation

    for name in sorted(vars(deprecation)):
        cls = getattr(deprecation, name)
        if name.startswith("RemovedInDjango") and isinstance(cls, type):
            config.addinivalue_line("filterwarnings", f"error::django.utils.deprecation.{name}")
