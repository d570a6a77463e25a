"""ESP sub-account mode: a tenant sends as its sub-account with the platform's parent credential.

This subpackage owns:

- :mod:`.subaccounts` -- which backends are sub-account backends, the ``TENANTMAIL["SUBACCOUNTS"]``
  setting (the parent credentials, settings-only), and building a tenant's inner backend options
  from the parent credential plus the tenant's platform-set ``mail_subaccount`` identifier;
- :mod:`.mailgun`, :mod:`.sparkpost`, :mod:`.amazon_ses` -- small subclasses of Anymail's backends
  that put the identifier where each ESP expects it (an HTTP request header, Anymail's
  ``subaccount`` option, SES v2 ``TenantName``).

Core pieces it uses: :mod:`tenantmail.config` calls :func:`.subaccounts.subaccount_account` from
``_tenant_account`` (so the pool fingerprint, masking and every error path treat the result like
any tenant's options), :mod:`tenantmail.conf` parses the setting with
:func:`.subaccounts.parse_subaccounts`, and :mod:`tenantmail.isolation` supplies the defaults that
keep Anymail from reading the platform's ``ANYMAIL`` settings.
"""
