"""Errors raised at enqueue time, so that nothing surprising is left for the worker."""

from __future__ import annotations

from ..exceptions import TenantMailConfigurationError, TenantMailError


class UnstorableMessageError(TenantMailError, TypeError):
    """The message holds something that cannot be stored faithfully (named in the message)."""


class SecretOverrideError(TenantMailConfigurationError):
    """A queued send was given a credential as an override; credentials never enter the queue."""
