"""Queued sending in the example site: a tenant's request enqueues mail, a worker sends it."""

from __future__ import annotations

from django.core.mail import EmailMessage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST
from django_tenants.utils import get_public_schema_name

from tenantmail.queue import enqueue


@require_POST
def queue_welcome(request: HttpRequest) -> HttpResponse:
    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.schema_name == get_public_schema_name():
        return HttpResponse("Queue mail from a tenant's site (<schema>.localhost).", status=404)
    subject = request.POST.get("subject") or f"Welcome from {tenant.name}"
    # No tenant= here: the queue captures the tenant this request runs as (django-tenants'
    # connection) and stores only its schema name; the worker resolves credentials at send time.
    row = enqueue(EmailMessage(subject, "Hello from the queue!", to=["customer@example.com"]))
    return JsonResponse({"outbox_id": row.pk, "tenant": row.tenant_schema, "status": row.status})
