"""The example site's pages: the platform's index, a tenant's contact form, received mail."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from anymail.exceptions import AnymailError
from django import forms
from django.contrib import messages
from django.core.mail import EmailMessage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django_tenants.utils import get_public_schema_name, tenant_context

from example_site import fakes, mailbox
from example_site.customers.models import Client
from tenantmail.exceptions import TenantMailConfigurationError


def _tenant(request: HttpRequest) -> Any:
    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.schema_name == get_public_schema_name():
        return None
    return tenant


def _port_suffix(request: HttpRequest) -> str:
    port = request.get_port()
    return "" if port in ("80", "443") else f":{port}"


def index(request: HttpRequest) -> HttpResponse:
    """The platform's home page: every tenant, with links to its contact page and admin."""
    tenants = Client.objects.exclude(schema_name=get_public_schema_name()).order_by("name")
    suffix = _port_suffix(request)
    rows = [
        {
            "tenant": t,
            "contact_url": f"http://{t.schema_name}.localhost{suffix}/contact/",
            "backend": t.mail_backend or "platform default",
        }
        for t in tenants
    ]
    return render(request, "site/index.html", {"rows": rows})


def send_all(request: HttpRequest) -> HttpResponse:
    """One message as every tenant, each sent inside that tenant's context (POST only)."""
    if request.method != "POST":
        return redirect("index")
    for tenant in Client.objects.exclude(schema_name=get_public_schema_name()).order_by("name"):
        message = EmailMessage(
            f"Hello from {tenant.name}", "Sent by 'send as every tenant'.", to=["all@example.com"]
        )
        with tenant_context(tenant):
            try:
                message.send()
            except (TenantMailConfigurationError, AnymailError, OSError) as error:
                messages.error(request, f"{tenant.name}: {type(error).__name__}: {error}")
    return redirect("received")


class ContactForm(forms.Form):
    to = forms.EmailField(label="To", initial="customer@example.com")
    subject = forms.CharField(max_length=200)
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))


def contact(request: HttpRequest) -> HttpResponse:
    """Sends one message as this domain's tenant, with plain ``EmailMessage.send()``."""
    tenant = _tenant(request)
    if tenant is None:
        return redirect("index")
    initial = {"subject": f"Hello from {tenant.name}", "message": "Sent from the contact page."}
    form = ContactForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        message = EmailMessage(
            form.cleaned_data["subject"], form.cleaned_data["message"], to=[form.cleaned_data["to"]]
        )
        try:
            message.send()  # the default mailer is TenantBackend: this tenant's own account
        except TenantMailConfigurationError as error:
            form.add_error(None, f"This tenant's mail settings are unusable: {error}")
        except (AnymailError, OSError) as error:
            # Neither Anymail's nor smtplib's messages contain the credential.
            form.add_error(None, f"Sending failed ({type(error).__name__}): {error}")
        else:
            message_id = mailbox.message_id_of(message) or ""
            messages.success(request, f"Sent as {tenant.name}. Message id: {message_id}")
            return redirect(f"/received/?{urlencode({'highlight': message_id})}")
    return render(request, "site/contact.html", {"form": form, "tenant": tenant})


def received(request: HttpRequest) -> HttpResponse:
    """What the demo's fake ESP and SMTP servers received, newest first."""
    servers = fakes.current()
    rows = list(reversed(mailbox.rows(servers.received()))) if servers else []
    tenant = _tenant(request)
    context = {
        "rows": rows,
        "running": servers is not None,
        "tenant": tenant,
        "highlight": request.GET.get("highlight", ""),
        "servers": servers,
    }
    return render(request, "site/received.html", context)


def received_json(request: HttpRequest) -> JsonResponse:
    """The same as JSON (for tests): credentials masked, plus a SHA-256 to compare exactly."""
    servers = fakes.current()
    rows = mailbox.rows(servers.received()) if servers else []
    data = [
        {
            "received_at": r.received_at.isoformat(),
            "server": r.server,
            "tenant": r.tenant,
            "backend": r.backend,
            "credential": r.credential_masked,
            "on_behalf_of": r.on_behalf_of,
            "credential_sha256": r.credential_sha256,
            "credential_owner": r.credential_owner,
            "isolated": r.ok,
            "verdict": r.verdict[1],
            "from_email": r.from_email,
            "subject": r.subject,
            "message_id": r.message_id,
        }
        for r in rows
    ]
    return JsonResponse({"running": servers is not None, "messages": data})
