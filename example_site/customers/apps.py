from __future__ import annotations

from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "example_site.customers"
    label = "customers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from example_site import mailbox
        from tenantmail import signals

        # Record what was sent as whom, so the received-mail page can show it next to what the
        # servers received.
        signals.pre_send.connect(mailbox.on_pre_send, dispatch_uid="example-site-pre-send")
        signals.post_send.connect(mailbox.on_post_send, dispatch_uid="example-site-post-send")
