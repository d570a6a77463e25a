"""The platform's own site: ``localhost`` (the public schema), with the operator's admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from example_site import views

admin.site.site_header = "tenantmail example: platform admin"
admin.site.site_title = "tenantmail example"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("send-all/", views.send_all, name="send-all"),
    path("received/", views.received, name="received"),
    path("received.json", views.received_json, name="received-json"),
    # ESP event webhooks, one URL per tenant and ESP (tenantmail.webhooks.tracking_url).
    path("tenantmail/", include("tenantmail.webhooks.urls")),
]
