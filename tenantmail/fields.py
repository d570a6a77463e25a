"""``EncryptedJSONField``: a JSON object stored as a Fernet token.

The column only ever holds ciphertext. In Python the value is a :class:`SecretDict` (masked
``repr``). A token no configured key can decrypt loads as :class:`UndecryptableOptions`, which
keeps the original token so that saving the row (say, to rename the tenant) never destroys the
credential, and which the resolver turns into a clear configuration error at send time -- the
tenant's pages keep working while its mail fails loudly.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import crypto
from .exceptions import TenantMailConfigurationError
from .masking import SecretDict, masked

#: Every Fernet token starts with version byte 0x80, i.e. "gAAAAA" in url-safe base64.
FERNET_PREFIX = "gAAAAA"


class UndecryptableOptions(SecretDict):
    """Stand-in for options whose ciphertext no key on the ring can decrypt.

    ``key_error`` is set when the key ring itself is unusable (a malformed
    ``ENCRYPTION_KEYS`` entry): loading a tenant must still work -- every page of the site loads
    tenants -- so the error waits for the send, the checks and ``tenantmail_check``.
    """

    def __init__(self, token: str, key_error: TenantMailConfigurationError | None = None) -> None:
        super().__init__()
        self.token = token
        self.key_error = key_error

    def __repr__(self) -> str:
        return "UndecryptableOptions(<no configured key decrypts this value>)"

    __str__ = __repr__


def _decode(token: str) -> Any:
    try:
        plaintext = crypto.decrypt(token)
    except crypto.InvalidToken:
        return UndecryptableOptions(token)
    except TenantMailConfigurationError as error:
        # Kept without its traceback: those frames hold the whole key ring, and the error is
        # re-raised at send time, long after this load, where nothing would clear them.
        return UndecryptableOptions(token, key_error=error.with_traceback(None))
    value = json.loads(plaintext)
    return SecretDict(value) if isinstance(value, dict) else value


class SecretJSONWidget(forms.Textarea):
    """Never renders the stored value; a blank submission keeps it ("leave blank to keep")."""

    def format_value(self, value: Any) -> str | None:
        return None

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        # ModelForm's construct_instance() skips fields whose value is "omitted", so a blank
        # textarea leaves the stored secret untouched instead of wiping it.
        return not (data.get(name) or "").strip()


class SecretJSONFormField(forms.JSONField):
    widget = SecretJSONWidget

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return None

    def has_changed(self, initial: Any, data: Any) -> bool:
        return bool((data or "").strip())

    def to_python(self, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # blank means "keep" (see the widget), not invalid JSON
        value = super().to_python(value)
        if not isinstance(value, dict):
            # null, "", [..] would replace the credentials with a non-object (or fail the
            # NOT NULL column at save time).
            raise ValidationError(_('Enter a JSON object, e.g. {"api_key": "..."}.'))
        return value

    def masked_initial(self, value: Any) -> str:
        """What a person may see of the stored value (for help texts)."""
        return json.dumps(masked(value)) if isinstance(value, dict) else ""


class EncryptedJSONField(models.TextField):  # type: ignore[type-arg]
    description = _("A JSON object encrypted at rest with the TENANTMAIL key ring")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default", dict)
        kwargs.setdefault("blank", True)
        super().__init__(*args, **kwargs)

    def from_db_value(
        self, value: str | None, expression: Expression, connection: BaseDatabaseWrapper
    ) -> Any:
        if value is None or value == "":
            return value
        return _decode(value)

    def to_python(self, value: Any) -> Any:
        # Strings come from deserialization: ciphertext as dumpdata wrote it, or a hand-written
        # fixture's plaintext JSON, which is then encrypted on save -- never stored as is.
        if not isinstance(value, str) or not value:
            return value
        if value.startswith(FERNET_PREFIX):
            return _decode(value)
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise ValidationError(
                _("Enter a JSON object or a ciphertext written by dumpdata."), code="invalid"
            )
        return SecretDict(decoded)

    @method_decorator(sensitive_variables())
    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, UndecryptableOptions):
            return value.token
        plaintext = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return crypto.encrypt(plaintext.encode("utf-8"))

    def value_to_string(self, obj: models.Model) -> str:
        # dumpdata writes ciphertext: fixtures never carry a credential in clear.
        return str(self.get_prep_value(self.value_from_object(obj)) or "")

    def formfield(self, **kwargs: Any) -> Any:
        # A callable default (dict) makes Django add a hidden "initial" input and compare
        # against it; there is no initial value we are willing to put in a page.
        return super().formfield(
            **{
                "form_class": SecretJSONFormField,
                "widget": SecretJSONWidget,
                "show_hidden_initial": False,
                **kwargs,
            }
        )
