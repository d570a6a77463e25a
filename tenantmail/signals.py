"""Signals sent around every TenantBackend batch, and for delivery events per tenant.

``pre_send`` and ``post_send`` are sent with ``sender=TenantBackend`` and keyword arguments
``tenant`` (schema name, or ``None`` for platform mail), ``config`` (the
:class:`~tenantmail.config.MailConfig`, whose repr masks secrets), ``backend`` (the TenantBackend
instance) and ``messages``. ``post_send`` adds ``sent`` (the count the inner backend returned)
and ``error`` (the exception, or ``None``).

``tracking`` and ``inbound`` (:mod:`tenantmail.webhooks`) are sent with ``tenant`` (schema name,
or ``None`` for platform mail), ``event`` (Anymail's ``AnymailTrackingEvent`` /
``AnymailInboundEvent``) and ``esp_name``, inside that tenant's schema context; the sender is the
tenant-aware view class.

``suppressed`` is sent when ``TENANTMAIL["SUPPRESSION"] = "drop"`` removes recipients from a
send, with ``tenant``, ``message`` and ``recipients`` (the suppressed addresses); ``sender`` is
``TenantBackend``.
"""

from __future__ import annotations

from django.dispatch import Signal

pre_send = Signal()
post_send = Signal()
tracking = Signal()
inbound = Signal()
suppressed = Signal()
