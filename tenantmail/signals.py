"""Signals sent around every TenantBackend batch.

Both are sent with ``sender=TenantBackend`` and keyword arguments ``tenant`` (schema name, or
``None`` for platform mail), ``config`` (the :class:`~tenantmail.config.MailConfig`, whose repr
masks secrets), ``backend`` (the TenantBackend instance) and ``messages``. ``post_send`` adds
``sent`` (the count the inner backend returned) and ``error`` (the exception, or ``None``).
"""

from __future__ import annotations

from django.dispatch import Signal

pre_send = Signal()
post_send = Signal()
