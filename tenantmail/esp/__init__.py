"""ESP sub-account mode: the backends that send as a tenant's sub-account with the platform's
parent credential.

This subpackage owns :mod:`.mailgun`, :mod:`.sparkpost` and :mod:`.amazon_ses` -- small subclasses
of Anymail's backends that put the tenant's platform-set ``mail_subaccount`` identifier where each
ESP expects it (an HTTP request header, Anymail's ``subaccount`` option, SES v2 ``TenantName``).

Core pieces it uses: :mod:`tenantmail.subaccounts` (which backends are sub-account backends, the
settings-only ``TENANTMAIL["SUBACCOUNTS"]`` parent credentials, and a tenant's options built from
them, called by :mod:`tenantmail.config` so the pool fingerprint, masking and every error path
treat the result like any tenant's options) and :mod:`tenantmail.isolation` (the defaults that keep
Anymail from reading the platform's ``ANYMAIL`` settings). The core names these classes by dotted
path only, so it never imports this subpackage.
"""
