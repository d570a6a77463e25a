"""Tenant sites: ``<schema>.localhost``."""

from __future__ import annotations

from django.urls import URLPattern, path

from example_site import queue_views, views

urlpatterns: list[URLPattern] = [
    path("", views.contact, name="index"),
    path("contact/", views.contact, name="contact"),
    path("received/", views.received, name="received"),
    path("received.json", views.received_json, name="received-json"),
    path("queue-welcome/", queue_views.queue_welcome, name="queue-welcome"),
]
