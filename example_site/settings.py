"""Settings for the example site: django-tenants + tenantmail on an embedded PostgreSQL.

The public schema (``localhost``) has the admin; each tenant is ``<schema>.localhost``. Nothing
here can reach a real ESP: the ESP API URLs point at a closed loopback port until ``make serve``
or ``make demo`` starts the loopback fakes and points them there (``example_site.fakes``).
"""

from __future__ import annotations

from pathlib import Path

import django

from example_site.embedded_pg import database_url, django_database

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "example-site-not-secret"
DEBUG = True
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["localhost", ".localhost", "127.0.0.1"]

DATABASES = {"default": django_database(database_url("demo"))}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

SHARED_APPS = [
    "django_tenants",
    "example_site.customers",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "tenantmail",
    # Queued sending (tenantmail.queue): the task table lives in the public schema.
    "django_tasks_db",
]
if django.VERSION < (6, 0):
    SHARED_APPS.append("django_tasks")  # the django-tasks backport provides TASKS on 5.2
TENANT_APPS = ["django.contrib.contenttypes"]
INSTALLED_APPS = SHARED_APPS + [a for a in TENANT_APPS if a not in SHARED_APPS]
TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"

MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",  # first: it picks the schema
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_site.urls"  # tenants: <schema>.localhost
PUBLIC_SCHEMA_URLCONF = "example_site.urls_public"  # the platform: localhost

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"

DEFAULT_FROM_EMAIL = "noreply@saas.example"
SERVER_EMAIL = "errors@saas.example"
# Django 6.0 takes plain addresses (and deprecates the (name, address) pairs 5.2 needs).
ADMINS = (
    ["ops@saas.example"] if django.VERSION >= (6, 0) else [("Platform ops", "ops@saas.example")]
)

# The platform's own account (the fallback for tenants without their own).
PLATFORM_MAILGUN = {
    "api_key": "key-platform-demo-0000000000",
    "sender_domain": "mg.saas.example",
}
# The parent credential of the platform's Mailgun account, for tenants on a Mailgun subaccount
# (sub-account mode: the tenant row holds only the subaccount id, no secret).
PARENT_MAILGUN = {"api_key": "key-parent-demo-4c2e8a6f1d"}
SUBACCOUNTS = {"mailgun": PARENT_MAILGUN}
# The platform's Postmark account token, for `manage.py tenantmail_provision --esp postmark`
# (fakes.py points api_url at the fake ESP's account API).
PROVISIONING = {
    "postmark": {"account_token": "pm-account-demo-8b1f3e6c2a", "api_url": "http://127.0.0.1:9/"}
}
# Where Anymail sends when an account sets no api_url. Port 9 ("discard") is closed: until the
# fakes are started, a send fails instead of reaching a real ESP with a demo key.
_NOWHERE = "http://127.0.0.1:9/"
ANYMAIL = {
    "MAILGUN_API_URL": f"{_NOWHERE}mailgun/v3/",
    "POSTMARK_API_URL": f"{_NOWHERE}postmark/",
    "SENDGRID_API_URL": f"{_NOWHERE}sendgrid/v3/",
}

# What a tenant may choose here: ESP APIs the demo's fake ESP speaks (it does SendGrid too, but
# Anymail warns that it dropped SendGrid support), and SMTP.
ALLOWED_BACKENDS = ["mailgun", "postmark", "smtp", "mailgun_subaccount"]

if django.VERSION >= (6, 1):
    MAILERS = {
        # Application mail: the active tenant's own account.
        "default": {"BACKEND": "tenantmail.backends.TenantBackend"},
        # The platform's account: tenantmail's fallback.
        "platform": {
            "BACKEND": "anymail.backends.mailgun.EmailBackend",
            "OPTIONS": PLATFORM_MAILGUN,
        },
        # Error mail to ADMINS: the platform's own SMTP relay, never a tenant's account.
        "admin": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": 9, "timeout": 5},
        },
    }
    TENANTMAIL = {
        "DEFAULT": "platform",
        "ALLOWED_BACKENDS": ALLOWED_BACKENDS,
        "SUBACCOUNTS": SUBACCOUNTS,
        "PROVISIONING": PROVISIONING,
    }
else:
    EMAIL_BACKEND = "tenantmail.backends.TenantBackend"
    # Used by the admin handler's SMTP backend (the platform relay).
    EMAIL_HOST = "127.0.0.1"
    EMAIL_PORT = 9
    EMAIL_TIMEOUT = 5
    TENANTMAIL = {
        "DEFAULT": {"BACKEND": "mailgun", "OPTIONS": PLATFORM_MAILGUN},
        "ALLOWED_BACKENDS": ALLOWED_BACKENDS,
        "SUBACCOUNTS": SUBACCOUNTS,
        "PROVISIONING": PROVISIONING,
    }

# Queued mail: `manage.py db_worker` runs these tasks (make demo runs one in-process).
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            # Error mail must never leave through a tenant's account.
            **(
                {"using": "admin"}
                if django.VERSION >= (6, 1)
                else {"email_backend": "django.core.mail.backends.smtp.EmailBackend"}
            ),
        },
    },
    "loggers": {
        "django.request": {
            "handlers": ["console", "mail_admins"],
            "level": "ERROR",
            "propagate": False,
        }
    },
}
