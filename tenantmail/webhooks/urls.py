"""``path("tenantmail/", include("tenantmail.webhooks.urls"))`` in the *public* urlconf.

Per ESP: ``<esp>/tracking/<tenant key>/`` (the tenant's own account, or a platform-account
tenant) and ``<esp>/tracking/`` (the platform's account: events are attributed by their
``metadata["tenant"]``); ``<esp>/inbound/...`` likewise where supported.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from .esps import TRACKING_VIEWS
from .inbound import INBOUND_VIEWS

app_name = "tenantmail_webhooks"

urlpatterns: list[URLPattern] = []
for _esp, _view in TRACKING_VIEWS.items():
    urlpatterns += [
        path(f"{_esp}/tracking/<str:tenant_key>/", _view.as_view(), name=f"{_esp}_tracking"),
        path(f"{_esp}/tracking/", _view.as_view(), name=f"{_esp}_platform_tracking"),
    ]
for _esp, _view in INBOUND_VIEWS.items():
    urlpatterns += [
        path(f"{_esp}/inbound/<str:tenant_key>/", _view.as_view(), name=f"{_esp}_inbound"),
        path(f"{_esp}/inbound/", _view.as_view(), name=f"{_esp}_platform_inbound"),
    ]
