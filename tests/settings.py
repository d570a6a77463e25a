"""Settings for the test suite: django-tenants on a real PostgreSQL."""

from __future__ import annotations

import django

from example_site.embedded_pg import database_url, django_database

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": django_database(database_url("tests"))}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

SHARED_APPS = [
    "django_tenants",
    "tests.tenants_app",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tenantmail",
    # tenantmail.queue: the task table lives in the public schema, like the outbox.
    "django_tasks_db",
]
if django.VERSION < (6, 0):
    SHARED_APPS.append("django_tasks")  # the backport that provides TASKS on Django 5.2
TENANT_APPS = ["django.contrib.contenttypes"]
INSTALLED_APPS = SHARED_APPS + [a for a in TENANT_APPS if a not in SHARED_APPS]
TENANT_MODEL = "tenants_app.Client"
TENANT_DOMAIN_MODEL = "tenants_app.Domain"
MIDDLEWARE = ["django_tenants.middleware.main.TenantMainMiddleware"]
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["*"]

if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {"BACKEND": "tenantmail.backends.TenantBackend"},
        "admin": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
    }
else:
    EMAIL_BACKEND = "tenantmail.backends.TenantBackend"
DEFAULT_FROM_EMAIL = "platform@saas.example"
ANYMAIL: dict[str, object] = {}
TENANTMAIL: dict[str, object] = {
    # Tests point this at the fake ESP; see conftest.platform_default.
    "DEFAULT": {"BACKEND": "anymail.backends.test.EmailBackend"},
    "ENCRYPTION_KEYS": ["xiIWGnBVUb5If1g5m3r5Q1-aVuBHTMzjvgKqPewGFEw="],
}
# The queue's own tests point workers at this database backend (real db_worker processes).
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"tenantmail": {"handlers": ["null"], "level": "DEBUG"}},
}
