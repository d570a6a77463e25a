"""The package imports without Django settings; its public names load on first use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import tenantmail


def test_importing_the_package_needs_no_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import tenantmail; print(tenantmail.__version__)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == tenantmail.__version__


def test_public_names_resolve_lazily() -> None:
    from tenantmail.tenancy import sending_as
    from tenantmail.threads import TenantThreadPoolExecutor, carry_tenant

    assert tenantmail.sending_as is sending_as
    assert tenantmail.carry_tenant is carry_tenant
    assert tenantmail.TenantThreadPoolExecutor is TenantThreadPoolExecutor
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tenantmail.no_such_name  # type: ignore[attr-defined]
