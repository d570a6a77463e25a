from __future__ import annotations

from django.core.mail import EmailMessage
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from tenantmail import mailer


def send_view(request: HttpRequest) -> HttpResponse:
    """Sends one message from inside a tenant request, the way an app would."""
    message = EmailMessage("From a request", "body", to=["customer@example.com"])
    sent = mailer().send_messages([message])
    return HttpResponse(f"{sent}")


urlpatterns = [
    path("send/", send_view),
    path("tenantmail/", include("tenantmail.webhooks.urls")),
]
