"""Nothing tenantmail keeps may outlive a change of the settings it was built from.

Pooled inner backends read ``ANYMAIL``, ``EMAIL_*``, ``MAILERS``, ``DEFAULT_FROM_EMAIL`` ... when
they are constructed, resolved configs read ``TENANTMAIL`` and ``MAILERS``, and the tenant cache
holds rows fetched under the old settings. An unpooled Anymail backend is built per send, so a
test that changes a setting with ``override_settings`` sees the change on the next send; with
tenantmail it must too, or users' test suites silently test stale settings.

``setting_changed`` only fires under ``override_settings`` (and pytest-django's ``settings``
fixture), never in production, so forgetting everything on *any* change is cheap and needs no
list of which settings each backend reads.
"""

from __future__ import annotations

from django.core.signals import setting_changed
from django.dispatch import receiver


@receiver(setting_changed, dispatch_uid="tenantmail-forget-on-setting-changed")
def forget_everything(**kwargs: object) -> None:
    """Close idle pooled backends (busy ones at checkin) and drop every resolution cache."""
    # Imported here: factory imports this module to connect the receiver.
    from . import config, factory, pool
    from .tenancy import tenant_cache

    pool.clear_if_created()
    # config has no public clear(); its own receiver only watches TENANTMAIL and a few more.
    config._resolved.clear()
    tenant_cache.invalidate()
    factory.backend_class.cache_clear()
