"""A urlconf without the webhooks (a tenant-site urlconf, for tracking_url's fallback)."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
