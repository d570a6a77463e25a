"""Every problem with a tenant's mail settings at once, by the rules a send applies.

A send stops at the first problem; a person fixing a tenant (``full_clean()``, the
``tenantmail_check`` command) wants the whole list. Nothing here restates a rule: each of the send
path's own checks (:func:`~tenantmail.validation.check_options` and
:func:`~tenantmail.validation.check_defaults` per entry, the resolver's account checks, then the
resolver as a whole) runs separately and what they raise is collected, de-duplicated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from django.views.decorators.debug import sensitive_variables

from .conf import get_settings
from .config import _tenant_account, resolve
from .exceptions import TenantMailConfigurationError
from .fields import UndecryptableOptions
from .models import TenantMailSource
from .tenancy import ActiveTenant
from .validation import check_defaults, check_options

__all__ = ["TENANT_SETTINGS", "Draft", "tenant_problems"]

#: The settings a tenant's own row can fix; errors about anything else are the platform's.
TENANT_SETTINGS = frozenset({"mail_backend", "mail_options", "mail_defaults", "mail_subaccount"})


class Draft:
    """Stands in for the tenant so that the resolver reads ``source`` -- what a form or a row
    would save -- and caches nothing about the real instance."""

    def __init__(self, source: TenantMailSource) -> None:
        self.source = source

    def get_mail_config(self) -> TenantMailSource:
        return self.source


@sensitive_variables()
def tenant_problems(schema: str, source: TenantMailSource) -> list[TenantMailConfigurationError]:
    """Every configuration error a send as ``schema`` with ``source`` would hit, first-found first.

    Errors about the platform's own configuration (``TENANTMAIL["DEFAULT"]``, ...) are left out:
    the system checks report those once, not once per tenant.
    """
    problems: dict[str, TenantMailConfigurationError] = {}

    def run(rule: Callable[[], object]) -> bool:
        try:
            rule()
        except TenantMailConfigurationError as error:
            if error.setting in TENANT_SETTINGS:
                problems.setdefault(str(error), error)
            return False
        return True

    options = source.options
    clean_options: Any = options
    if isinstance(options, Mapping) and not isinstance(options, UndecryptableOptions):
        # One option at a time, so one bad option does not hide the next; the options that pass
        # go on to the account rules (allowed backend, required options), which then still run.
        clean_options = {
            name: value
            for name, value in options.items()
            if run(partial(check_options, {name: value}, schema))
        }
        run(lambda: check_options(options, schema))  # rules that look at options together
    defaults = source.defaults
    if isinstance(defaults, Mapping):
        for name, value in defaults.items():
            run(partial(check_defaults, {name: value}, schema))
    if source.backend:
        draft = dataclasses.replace(source, options=clean_options)
        run(lambda: _tenant_account(draft, schema, get_settings()))
    # The resolver as a send runs it: whatever the per-rule runs above could not see.
    run(lambda: resolve(ActiveTenant(schema, Draft(source))))
    return list(problems.values())
