"""Views that make Django send its own server mail (error reports, mail_admins, broken links)."""

from __future__ import annotations

from django.core.mail import mail_admins, mail_managers
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.urls import send_view


def boom_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a server error during a tenant's request")


def form_view(request: HttpRequest) -> HttpResponse:
    # Reading POST is where Django raises TooManyFieldsSent (a django.security.* error).
    return HttpResponse(str(len(request.POST)))


def notify_view(request: HttpRequest) -> HttpResponse:
    mail_admins("admins, from a tenant request", "body")
    mail_managers("managers, from a tenant request", "body")
    return HttpResponse("ok")


urlpatterns = [
    path("send/", send_view),
    path("boom/", boom_view),
    path("form/", form_view),
    path("notify/", notify_view),
]
