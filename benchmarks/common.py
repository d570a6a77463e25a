"""Names and credentials shared by the benchmark process and its helper processes (no Django)."""

from __future__ import annotations

import hashlib

#: Schema-name prefix of the benchmark's tenant rows: t00000 ... t09999.
PREFIX = "t"
#: The tenant whose own account is Anymail's test backend (row 6).
INPROC_SCHEMA = "inproc"
#: Credential of the "raw backend" rows, which send as no tenant.
RAW_KEY = "key-raw-floor-000000000000"
#: Row 6 (in-process overhead) sends through Anymail's test backend as a tenant's own account.
TEST_BACKEND = "benchmarks.backends.MailgunShapedTestBackend"
#: Subject prefix of every benchmark message; the tenant it was meant for follows.
SUBJECT = "bench"


def schema(index: int) -> str:
    return f"{PREFIX}{index:05d}"


def tenant_key(schema_name: str) -> str:
    """The tenant's own Mailgun key: distinct per tenant, so a mix-up is visible at the ESP."""
    digest = hashlib.sha256(schema_name.encode()).hexdigest()[:24]
    return f"key-{schema_name}-{digest}"


def subject_for(schema_name: str) -> str:
    return f"{SUBJECT} {schema_name}"


def intended_tenant(subject: str) -> str:
    """The tenant a message was sent for, read back from its subject."""
    return subject.rpartition(" ")[2]
