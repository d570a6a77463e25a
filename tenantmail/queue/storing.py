"""Store outbox rows in one statement that also gives each its fair priority.

Fairness between tenants (see DESIGN.md "Queue"): each tenant's waiting messages fill priority
levels of ``FAIR_SHARE`` messages each, 0, -1, -2, ... down to ``MIN_PRIORITY``, so a burst sinks
behind the few messages other tenants queue later. A new message joins the tenant's deepest
level while it has room, else opens the next one. Finding that level and how full it is takes
two index probes on ``(tenant_schema, status, priority)`` (O(log n), whatever the backlog: a
count of the whole backlog grew with it and cost milliseconds per enqueue behind a burst), and
they run inside the ``INSERT``: one round trip stores the batch and returns ids and priorities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections

from ..models import OutboxMessage
from .conf import MIN_PRIORITY

_SQL = """
WITH level AS (
    SELECT min(priority) AS p FROM {table} WHERE tenant_schema = %s AND status = %s
), crowd AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM {table}, level
        WHERE tenant_schema = %s AND status = %s AND priority = level.p
        LIMIT %s
    ) AS at_level
)
INSERT INTO {table} ({columns}, priority)
VALUES {rows}
RETURNING id, priority
"""
# Row k of the batch goes `k` places after what is already waiting at the deepest level.
_PRIORITY = (
    "(SELECT GREATEST({floor}, COALESCE(level.p, 0) - (crowd.n + %s) / %s)::smallint "
    "FROM level, crowd)"
)


def insert(rows: Sequence[OutboxMessage], *, schema: str, fair_share: int, db: str) -> None:
    """INSERT ``rows`` (all of one tenant); sets each row's ``pk`` and ``priority``."""
    connection = connections[db]
    quote = connection.ops.quote_name
    fields = [
        f for f in OutboxMessage._meta.concrete_fields if not f.primary_key and f.name != "priority"
    ]
    placeholders = ", ".join(["%s"] * len(fields))
    priority = _PRIORITY.format(floor=MIN_PRIORITY)
    queued = OutboxMessage.Status.QUEUED.value
    params: list[Any] = [schema, queued, schema, queued, fair_share]
    values = []
    for position, row in enumerate(rows):
        values.append(f"({placeholders}, {priority})")
        params += [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
        params += [position, fair_share]
    sql = _SQL.format(
        table=quote(OutboxMessage._meta.db_table),
        columns=", ".join(quote(f.column or f.attname) for f in fields),
        rows=", ".join(values),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    # RETURNING follows the VALUES order for a plain multi-row INSERT in PostgreSQL.
    for row, (pk, level) in zip(rows, returned, strict=True):
        row.pk, row.priority = pk, level
        row._state.adding, row._state.db = False, db
