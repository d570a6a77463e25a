"""A form (and ModelAdmin mixin) for editing a tenant's mail settings without leaking them.

``TenantMailForm`` replaces the raw ``mail_options`` JSON with one input per option:

- the backend is chosen from ``TENANTMAIL["ALLOWED_BACKENDS"]`` (short names where there is one,
  blank = the platform's account);
- secrets (``api_key``, ``server_token``, ``password``, ...) are password inputs that are never
  rendered back: the help text shows the stored value masked (``…4f2a``) and a blank input
  keeps it;
- harmless options (``sender_domain``, ``api_url``, ``host``, ``port``, ...) are plain inputs;
- anything else goes in "Other options" (JSON, never rendered back either);
- ``mail_defaults`` and the resulting options are validated the way a send would validate them,
  with readable errors on the offending field.

Use it in your own admin::

    @admin.register(Client)
    class ClientAdmin(TenantMailAdminMixin, admin.ModelAdmin):
        list_display = ["name", "schema_name", "mail_backend"]

or as the base of any ``ModelForm`` of a ``TenantMailMixin`` model (e.g. a tenant's own settings
page). This module registers nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .conf import BACKEND_ALIASES, expand_backend, get_settings
from .config import resolve
from .diagnosis import TENANT_SETTINGS, Draft
from .exceptions import TenantMailConfigurationError
from .fields import UndecryptableOptions
from .masking import PUBLIC_OPTION_NAMES, mask, masked
from .models import ENDPOINT_OPTIONS, SECRET_ENDPOINT_OPTIONS, TenantMailSource
from .subaccounts import SUBACCOUNT_BACKENDS
from .tenancy import ActiveTenant
from .validation import check_defaults
from .verification import admin as verification_admin
from .webhooks.admin import describe_webhook_secrets

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.http import HttpRequest, HttpResponse

    _FormBase = forms.ModelForm[Any]
    _AdminBase = ModelAdmin[Any]
else:
    _FormBase = forms.ModelForm
    _AdminBase = object

__all__ = [
    "OPTION_FIELDS",
    "SENSITIVE_POST_PARAMETERS",
    "TenantMailAdminMixin",
    "TenantMailForm",
    "option_field_name",
]

OptionKind = Literal["secret", "text", "url", "int", "bool"]


@dataclass(frozen=True)
class OptionField:
    """One backend option with its own form input."""

    label: str
    kind: OptionKind

    @property
    def secret(self) -> bool:
        return self.kind == "secret"


#: Options with their own input. Everything else is entered as JSON in "Other options".
OPTION_FIELDS: Mapping[str, OptionField] = {
    "api_key": OptionField("API key", "secret"),
    "server_token": OptionField("Server token", "secret"),
    "api_token": OptionField("API token", "secret"),
    "secret_key": OptionField("Secret key", "secret"),
    "sender_domain": OptionField("Sender domain", "text"),
    "project_id": OptionField("Project ID", "text"),
    "api_url": OptionField("API URL", "url"),
    "host": OptionField("SMTP host", "text"),
    "port": OptionField("SMTP port", "int"),
    "username": OptionField("SMTP user name", "text"),
    "password": OptionField("SMTP password", "secret"),
    "use_tls": OptionField("STARTTLS (use_tls)", "bool"),
    "use_ssl": OptionField("Implicit TLS (use_ssl)", "bool"),
    "timeout": OptionField("Timeout (seconds)", "int"),
}

_SMTP = BACKEND_ALIASES["smtp"]

#: Which of OPTION_FIELDS each known backend takes. Backends not listed (custom dotted paths)
#: accept every field.
BACKEND_OPTION_FIELDS: Mapping[str, tuple[str, ...]] = {
    _SMTP: ("host", "port", "username", "password", "use_tls", "use_ssl", "timeout"),
    BACKEND_ALIASES["amazon_ses"]: (),
    BACKEND_ALIASES["brevo"]: ("api_key", "api_url"),
    BACKEND_ALIASES["mailersend"]: ("api_token", "api_url"),
    BACKEND_ALIASES["mailgun"]: ("api_key", "sender_domain", "api_url"),
    BACKEND_ALIASES["mailjet"]: ("api_key", "secret_key", "api_url"),
    BACKEND_ALIASES["mailtrap"]: ("api_token", "api_url"),
    BACKEND_ALIASES["mandrill"]: ("api_key", "api_url"),
    BACKEND_ALIASES["postal"]: ("api_key", "api_url"),
    BACKEND_ALIASES["postmark"]: ("server_token", "api_url"),
    BACKEND_ALIASES["resend"]: ("api_key", "api_url"),
    BACKEND_ALIASES["scaleway"]: ("secret_key", "project_id", "api_url"),
    BACKEND_ALIASES["sendgrid"]: ("api_key", "api_url"),
    BACKEND_ALIASES["sparkpost"]: ("api_key", "api_url"),
    BACKEND_ALIASES["unisender_go"]: ("api_key", "api_url"),
    # Sub-account mode: the tenant holds no option at all (the parent's are in settings).
    **dict.fromkeys(SUBACCOUNT_BACKENDS.values(), ()),
}

_SHORT_NAMES = {path: short for short, path in BACKEND_ALIASES.items()}


def option_field_name(option: str) -> str:
    """The form field that edits ``option`` (prefixed: the tenant model may own a ``host``)."""
    return f"mail_option_{option}"


def _short(backend: str) -> str:
    return _SHORT_NAMES.get(backend, backend)


def _used_by(option: str) -> str:
    users = sorted(_short(b) for b, names in BACKEND_OPTION_FIELDS.items() if option in names)
    return ", ".join(users)


def _form_field(option: str) -> forms.Field:
    spec = OPTION_FIELDS[option]
    help_text = _("Used by: %(backends)s.") % {"backends": _used_by(option)}
    common: dict[str, Any] = {"label": _(spec.label), "required": False, "help_text": help_text}
    if spec.kind == "secret":
        return forms.CharField(
            widget=forms.PasswordInput(
                render_value=False, attrs={"autocomplete": "new-password", "spellcheck": "false"}
            ),
            **common,
        )
    if spec.kind == "url":
        return forms.URLField(assume_scheme="https", **common)
    if spec.kind == "int":
        return forms.IntegerField(min_value=1, max_value=65535, **common)
    if spec.kind == "bool":
        return forms.BooleanField(**common)
    return forms.CharField(**common)


def _fields_used_by(choice: str) -> list[str]:
    """The option inputs a ``mail_backend`` choice uses ("" = the platform's account: none)."""
    if not choice:
        return []
    names = BACKEND_OPTION_FIELDS.get(expand_backend(choice), tuple(OPTION_FIELDS))
    return [option_field_name(name) for name in names]


def _reason(error: TenantMailConfigurationError) -> str:
    """The error without its "tenant 'x', setting:" prefix (the form shows where it is)."""
    prefix = [f"tenant {error.tenant!r}"] if error.tenant is not None else []
    prefix += [error.setting] if error.setting is not None else []
    return str(error).removeprefix(f"{', '.join(prefix)}: ")


class _OtherOptionsField(forms.Field):
    """JSON object of further options. Never rendered back; blank keeps what is stored."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})

    def prepare_value(self, value: Any) -> Any:
        return ""

    def to_python(self, value: Any) -> dict[str, Any] | None:
        text = str(value or "").strip()
        if not text:
            return None  # blank: keep
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValidationError(_("Enter valid JSON."), code="invalid") from None
        if not isinstance(parsed, dict):
            raise ValidationError(
                _('Enter a JSON object, e.g. {"region_name": "eu-west-1"}, or {} to clear.'),
                code="invalid",
            )
        return parsed


class TenantMailForm(_FormBase):
    """Edits ``mail_backend``, ``mail_options`` (one input per option) and ``mail_defaults``."""

    class Media:
        js = ("tenantmail/admin-backend-fields.js",)

    mail_backend = forms.ChoiceField(
        label=_("Mail backend"),
        required=False,
        help_text=_(
            "Whose account this tenant's mail leaves through. The platform default discards the "
            "options stored below."
        ),
    )
    mail_options_other = _OtherOptionsField(
        label=_("Other options"),
        required=False,
        help_text=_(
            "Further keyword arguments of the backend as a JSON object, e.g. "
            '{"client_params": {...}} for Amazon SES. Never shown again; leave blank to keep, '
            "{} to clear."
        ),
    )
    mail_options_forget = forms.BooleanField(
        label=_("Forget the stored secrets"),
        required=False,
        help_text=_("Drop every stored secret (then enter the ones to keep above)."),
    )
    mail_defaults = forms.JSONField(
        label=_("Message defaults"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=_(
            'JSON object, e.g. {"from_email": "hello@acme.example", "reply_to": "...", '
            '"headers": {...}, "tags": [...], "metadata": {...}}.'
        ),
    )

    # One field per entry of OPTION_FIELDS, named by option_field_name().
    mail_option_api_key = _form_field("api_key")
    mail_option_server_token = _form_field("server_token")
    mail_option_api_token = _form_field("api_token")
    mail_option_secret_key = _form_field("secret_key")
    mail_option_sender_domain = _form_field("sender_domain")
    mail_option_project_id = _form_field("project_id")
    mail_option_api_url = _form_field("api_url")
    mail_option_host = _form_field("host")
    mail_option_port = _form_field("port")
    mail_option_username = _form_field("username")
    mail_option_password = _form_field("password")
    mail_option_use_tls = _form_field("use_tls")
    mail_option_use_ssl = _form_field("use_ssl")
    mail_option_timeout = _form_field("timeout")

    #: Whether ``mail_subaccount`` is editable (operators only; never on a tenant-facing form).
    allow_subaccount_edit: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._new_options: dict[str, Any] | None = None
        self._kept_secrets: list[str] = []
        self._endpoint_moved = False
        stored_backend = str(getattr(self.instance, "mail_backend", "") or "")
        self.stored_backend = expand_backend(stored_backend) if stored_backend else ""
        stored = getattr(self.instance, "mail_options", None)
        self.stored_options: Mapping[str, Any] = stored if isinstance(stored, Mapping) else {}
        self._setup_backend_choices()
        # A new tenant has no instance data, so the JSON textarea would start as "null".
        self.initial.setdefault("mail_defaults", {})
        # The sub-account identifier is the platform's to set (tenantmail.esp): read-only unless
        # the form says otherwise (TenantMailAdminMixin does, for superusers). Disabled fields
        # ignore whatever is posted for them.
        if not self.allow_subaccount_edit and "mail_subaccount" in self.fields:
            self.fields["mail_subaccount"].disabled = True
        for option, spec in OPTION_FIELDS.items():
            name = option_field_name(option)
            if name not in self.fields:
                continue
            value = self.stored_options.get(option)
            if spec.secret:
                shown = (
                    _("Stored: %(masked)s. Leave blank to keep.") % {"masked": mask(value)}
                    if value not in (None, "")
                    else _("Not set.")
                )
                self.fields[name].help_text = f"{shown} {self.fields[name].help_text}"
            elif value is not None:
                self.initial.setdefault(name, value)
        self._describe_other_options()
        describe_webhook_secrets(self, self.instance)

    def _setup_backend_choices(self) -> None:
        field = self.fields.get("mail_backend")
        if not isinstance(field, forms.ChoiceField):
            return
        allowed = get_settings().allowed_backends
        choices: list[tuple[str, str]] = [("", str(_("Platform default (the platform's account)")))]
        choices += sorted(((_short(b), _short(b)) for b in allowed), key=lambda c: c[1])
        current = _short(self.stored_backend) if self.stored_backend else ""
        if self.stored_backend and self.stored_backend not in allowed:
            # Shown so that it is not silently replaced by the first choice; refused on save.
            choices.append((current, f"{current} ({_('not allowed; choose another')})"))
        field.choices = choices
        self.initial["mail_backend"] = current
        # For admin/tenantmail.js: which inputs each choice uses (progressive enhancement: without
        # JavaScript every input is shown and the server refuses the ones that do not apply).
        uses = {value: _fields_used_by(value) for value, _label in choices}
        field.widget.attrs["data-tenantmail-fields"] = json.dumps(uses, sort_keys=True)

    def _describe_other_options(self) -> None:
        field = self.fields.get("mail_options_other")
        if field is None:
            return
        if isinstance(self.stored_options, UndecryptableOptions):
            note: Any = _(
                "The stored options cannot be decrypted with the configured keys: enter the "
                "credentials again."
            )
        else:
            other = {k: v for k, v in self.stored_options.items() if k not in OPTION_FIELDS}
            note = (
                _("Stored: %(masked)s.")
                % {"masked": json.dumps(masked(other), sort_keys=True, ensure_ascii=False)}
                if other
                else _("Nothing stored.")
            )
        field.help_text = f"{note} {field.help_text}"

    # -- validation ----------------------------------------------------------------------------

    def _schema(self) -> str:
        schema = self.cleaned_data.get("schema_name") or getattr(self.instance, "schema_name", "")
        return str(schema or "new tenant")

    def clean_mail_backend(self) -> str:
        value = str(self.cleaned_data.get("mail_backend") or "")
        if value and expand_backend(value) not in get_settings().allowed_backends:
            raise ValidationError(
                _("This backend is not allowed; choose one from the list."), code="not_allowed"
            )
        return value

    def clean_mail_defaults(self) -> Any:
        value = self.cleaned_data.get("mail_defaults")
        if value in (None, ""):
            return {}
        try:
            check_defaults(value, self._schema())
        except TenantMailConfigurationError as error:
            raise ValidationError(_reason(error), code="invalid") from None
        return value

    @method_decorator(sensitive_variables())
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "mail_backend" not in cleaned:
            return cleaned  # the backend itself is invalid: nothing to check options against
        choice = str(cleaned["mail_backend"])
        backend = expand_backend(choice) if choice else ""
        options, entered = self._collect_options(cleaned, backend)
        if options is None:
            return cleaned
        if not backend:
            if entered:
                self.add_error(
                    "mail_backend",
                    _(
                        "Choose the backend these credentials are for, or clear them to use the "
                        "platform default."
                    ),
                )
                return cleaned
            options = {}
        unchanged = backend == self.stored_backend and options == dict(self.stored_options)
        if unchanged and isinstance(self.stored_options, UndecryptableOptions) and not entered:
            return cleaned  # keep the ciphertext; the help text says to re-enter it
        if backend:
            self._check_required(backend, options)
            self._check_kept_secrets(backend, options)
        if not self.errors:
            self._check_with_resolver(backend, options, cleaned.get("mail_defaults") or {})
        if not self.errors and not unchanged:
            self._new_options = options
        return cleaned

    @method_decorator(sensitive_variables())
    def _collect_options(
        self, cleaned: Mapping[str, Any], backend: str
    ) -> tuple[dict[str, Any] | None, bool]:
        """(the options the form would store, whether new secrets/other options were entered)."""
        same_backend = backend == self.stored_backend and not cleaned.get("mail_options_forget")
        base: Mapping[str, Any] = self.stored_options if same_backend else {}
        applicable: Sequence[str] | None = BACKEND_OPTION_FIELDS.get(backend)
        other = cleaned.get("mail_options_other")
        options: dict[str, Any] = {}
        if other is None:
            options.update((k, v) for k, v in base.items() if k not in OPTION_FIELDS)
        else:
            clash = sorted(set(other) & set(OPTION_FIELDS))
            if clash:
                self.add_error(
                    "mail_options_other",
                    _("Set %(names)s with its own field above.") % {"names": ", ".join(clash)},
                )
                return None, True
            options.update(other)
        entered = other is not None
        self._kept_secrets = (
            []
            if other is not None
            else ["mail_options_other"]
            * any(
                k not in PUBLIC_OPTION_NAMES and k not in ENDPOINT_OPTIONS - SECRET_ENDPOINT_OPTIONS
                for k in options
            )
        )
        for option, spec in OPTION_FIELDS.items():
            name = option_field_name(option)
            value = cleaned.get(name)
            given = value not in (None, "", False)
            if given and backend and applicable is not None and option not in applicable:
                self.add_error(
                    name,
                    _("%(backend)s does not use this option; clear it.")
                    % {"backend": _short(backend)},
                )
                continue
            if given:
                options[option] = value
                entered = entered or spec.secret
            elif spec.secret and base.get(option) not in (None, ""):
                options[option] = base[option]  # blank keeps the stored secret
                self._kept_secrets.append(name)
        return (None if self.errors else options), entered

    def _check_kept_secrets(self, backend: str, options: Mapping[str, Any]) -> None:
        """A kept ("leave blank") secret may not follow a new API URL or SMTP host: whoever may
        edit the tenant but not read its secrets could otherwise point it at their own server."""
        if backend != self.stored_backend:
            # Switching backends never keeps a secret (see _collect_options): every secret going
            # to the new destination was typed in, so the model may take it there.
            self._endpoint_moved = True
            return
        stored = self.stored_options
        moved = [n for n in sorted(ENDPOINT_OPTIONS) if options.get(n) != stored.get(n)]
        self._endpoint_moved = bool(moved)
        if not moved:
            return
        where = ", ".join(str(OPTION_FIELDS[n].label) if n in OPTION_FIELDS else n for n in moved)
        for name in dict.fromkeys(self._kept_secrets):
            self.add_error(
                name,
                _(
                    "You changed %(where)s, which is where this secret is sent: enter it again "
                    "(it is never taken along to a new destination)."
                )
                % {"where": where},
            )

    def _post_clean(self) -> None:
        # clean() above ran the send's rules on the options this form will store; the model's
        # clean() would run them again on the options stored before.
        self.instance._tenantmail_form_validated = True
        try:
            super()._post_clean()  # type: ignore[misc]
        finally:
            del self.instance._tenantmail_form_validated

    def _check_required(self, backend: str, options: Mapping[str, Any]) -> None:
        for option in get_settings().required_options.get(backend, ()):
            if options.get(option) in (None, ""):
                name = option_field_name(option)
                field = name if name in self.fields else "mail_options_other"
                self.add_error(
                    field,
                    _(
                        "%(backend)s needs %(option)s; without it the platform's own credentials "
                        "would be used for this tenant."
                    )
                    % {"backend": _short(backend), "option": option},
                )

    def _check_with_resolver(
        self, backend: str, options: Mapping[str, Any], defaults: Mapping[str, Any]
    ) -> None:
        """Let tenantmail's resolver refuse what a send would refuse (option names, ...)."""
        subaccount = self.cleaned_data.get("mail_subaccount")
        if subaccount is None:
            subaccount = getattr(self.instance, "mail_subaccount", "")
        source = TenantMailSource(
            backend=backend or None,
            options=options,
            defaults=defaults,
            subaccount=str(subaccount or ""),
        )
        try:
            resolve(ActiveTenant(self._schema(), Draft(source)))
        except TenantMailConfigurationError as error:
            if error.setting not in TENANT_SETTINGS:
                return  # the platform's configuration: not this form's business
            field = "mail_options_other" if error.setting == "mail_options" else error.setting
            self.add_error(field if field in self.fields else None, _reason(error))

    def save(self, commit: bool = True) -> Any:
        if self._new_options is not None:
            self.instance.mail_options = self._new_options
            confirm = getattr(self.instance, "confirm_mail_endpoint_change", None)
            if self._endpoint_moved and confirm is not None:
                confirm()  # every secret going to the new destination was typed in again
        return super().save(commit)


#: The admin fieldsets of :class:`TenantMailForm`'s fields.
TENANTMAIL_FIELDSETS: list[tuple[Any, dict[str, Any]]] = [
    (_("Mail account"), {"fields": ["mail_backend", "mail_subaccount"]}),
    (
        _("ESP credentials"),
        {
            "fields": [
                option_field_name(o)
                for o in (
                    "api_key",
                    "server_token",
                    "api_token",
                    "secret_key",
                    "sender_domain",
                    "project_id",
                    "api_url",
                )
            ],
            "description": _(
                "Secrets are stored encrypted and never shown again; leave a secret blank to keep "
                "it. Fill in only what the chosen backend uses."
            ),
        },
    ),
    (
        _("SMTP server"),
        {
            "fields": [
                option_field_name(o)
                for o in ("host", "port", "username", "password", "use_tls", "use_ssl", "timeout")
            ]
        },
    ),
    (
        _("Other options"),
        {"fields": ["mail_options_other", "mail_options_forget"], "classes": ["collapse"]},
    ),
    (_("Message defaults"), {"fields": ["mail_defaults"]}),
    (_("Webhook secrets"), {"fields": ["mail_webhook_secrets"]}),
]

#: POST parameters that may carry a secret (hidden from error reports by the admin mixin).
SENSITIVE_POST_PARAMETERS: tuple[str, ...] = (
    *(option_field_name(o) for o, spec in OPTION_FIELDS.items() if spec.secret),
    "mail_options_other",
    "mail_options",
    "mail_webhook_secrets",
)

_FORM_FIELDS = frozenset(
    {"mail_options", *(f for _title, opts in TENANTMAIL_FIELDSETS for f in opts["fields"])}
)


class TenantMailAdminMixin(_AdminBase):
    """Put before ``admin.ModelAdmin``: the tenant's mail settings as :class:`TenantMailForm`."""

    form = TenantMailForm
    #: An admin that sets its own ``actions`` keeps this one by listing it too.
    actions: Any = ("verify_mail_settings",)

    # Keys typed into the form must not reach an error report (DEBUG=False 500 mails, Sentry's
    # Django integration, ...): an exception while saving would otherwise quote the POST.
    @method_decorator(sensitive_post_parameters(*SENSITIVE_POST_PARAMETERS))
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        user = getattr(request, "user", None)
        if getattr(user, "is_superuser", False):  # the operator sets sub-account ids
            return type(form.__name__, (form,), {"allow_subaccount_edit": True})
        return form

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = []
        for title, options in super().get_fieldsets(request, obj):
            fields = [f for f in options.get("fields", ()) if f not in _FORM_FIELDS]
            if fields:
                fieldsets.append((title, {**options, "fields": fields}))
        backend = None if obj is None else str(getattr(obj, "mail_backend", "") or "")
        if request.method == "POST" and "mail_backend" in request.POST:
            # A re-rendered form (an error) opens the sections of the backend just chosen.
            backend = str(request.POST["mail_backend"])
        mail = tenantmail_fieldsets(backend)
        if obj is not None and hasattr(obj, "mail_verified_at"):
            heading, first = mail[0]  # "Mail account": the last verification's result
            mail[0] = (heading, {**first, "description": verification_admin.status_html(obj)})
        return [*fieldsets, *mail]

    # -- verification (tenantmail.verification) ---------------------------------------------

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = tuple(super().get_list_display(request))
        return (
            shown if "mail_verification_status" in shown else (*shown, "mail_verification_status")
        )

    @admin.display(description=_("mail verification"))
    def mail_verification_status(self, obj: Any) -> str:
        return verification_admin.status_text(obj)

    @admin.action(description=_("Verify mail settings"), permissions=["change"])
    def verify_mail_settings(self, request: HttpRequest, queryset: Any) -> None:
        verification_admin.verify_selected(request, queryset)


def tenantmail_fieldsets(backend: str | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """:data:`TENANTMAIL_FIELDSETS` with the option sections ``backend`` does not use collapsed.

    ``backend`` is the stored ``mail_backend`` ("" = platform default, which uses none);
    ``None`` (a new tenant) collapses nothing.
    """
    path = expand_backend(backend) if backend else ""
    used = set(BACKEND_OPTION_FIELDS.get(path, OPTION_FIELDS)) if path else set()
    out = []
    for title, options in TENANTMAIL_FIELDSETS:
        names = {f.removeprefix("mail_option_") for f in options["fields"]}
        if backend is not None and names <= set(OPTION_FIELDS) and not names & used:
            options = {**options, "classes": ["collapse"]}
        out.append((title, options))
    return out


# The outbox's admin lives with the queue; importing it here is what autodiscovery sees.
from .queue import admin as _queue_admin  # noqa: E402, F401
