"""``--profile ROW``: where one row's time goes, per function, in µs per message.

The row runs warm, once without and once under pyinstrument. The tree is pyinstrument's; the
table below it sums each tenantmail function's inclusive time (and the inner backend's
``send_messages``) per message, also scaled by (time without ÷ time with the profiler) as an
estimate of the real cost: sampling adds a roughly even overhead to every Python call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from .common import schema
from .rows import (
    InProcRawRow,
    InProcTenantRow,
    NaiveRow,
    RawRow,
    Row,
    TenantRow,
    tenantmail_settings,
)


def _rows(scale: Any, esp: Any, tenants: list[Any], inproc: Any) -> dict[str, Any]:
    many = tenants[: scale.many_tenants]
    # key: (factory, messages measured, warm-up sends, TENANTMAIL changes)
    return {
        "1": (lambda: RawRow(esp.mailgun_api_url), 1000, 50, {}),
        "2": (lambda: NaiveRow(schema(0)), 300, 10, {}),
        "3": (lambda: TenantRow(tenants[:1]), 1000, 50, {}),
        "3s": (lambda: TenantRow(tenants[:1], mode="schema"), 1000, 50, {}),
        "4": (
            lambda: TenantRow(many),
            2 * len(many),
            len(many),
            {"MAX_CONNECTIONS": len(many) + 24},
        ),
        "5": (
            lambda: TenantRow(tenants),
            2000,
            scale.churn_max_connections,
            {"MAX_CONNECTIONS": scale.churn_max_connections},
        ),
        "6a": (InProcRawRow, 20000, 500, {}),
        "6b": (lambda: InProcTenantRow(inproc), 20000, 500, {}),
    }


def profile(key: str, scale: Any, esp: Any, tenants: list[Any], inproc: Any) -> list[str]:
    factory, n, warm, changes = _rows(scale, esp, tenants, inproc)[key]
    with tenantmail_settings(**changes):
        row: Row = factory()
        row.send(warm)
        plain = _timed(lambda: row.send(n))
        profiler = Profiler(interval=0.0005)
        profiler.start()
        profiled = _timed(lambda: row.send(n))
        profiler.stop()
        row.after_round()
        row.close()
    esp.collect()
    scale_factor = plain / profiled
    lines = [
        f"row {key}: {n} messages, {plain / n * 1e6:.1f} µs/msg without the profiler, "
        f"{profiled / n * 1e6:.1f} µs/msg under it",
        profiler.output_text(unicode=True, color=False, show_all=False),
        "inclusive time per message (tenantmail functions, and the inner backend's send):",
        f"{'µs/msg profiled':>16} {'µs/msg est.':>12}  function",
    ]
    root = profiler.last_session.root_frame() if profiler.last_session else None
    totals: dict[tuple[str, str], float] = {}
    if root is not None:
        _collect(root, totals, set())
    for (function, where), seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        per_msg = seconds / n * 1e6
        if per_msg >= 0.5:
            lines.append(f"{per_msg:16.1f} {per_msg * scale_factor:12.1f}  {function}  {where}")
    return lines


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _interesting(frame: Frame) -> bool:
    path = frame.file_path or ""
    return "/tenantmail/" in path or (
        frame.function == "send_messages" and "/anymail/backends/" in path
    )


def _collect(frame: Frame, totals: dict[tuple[str, str], float], on_stack: set[Any]) -> None:
    key = (frame.function or "?", f"{frame.file_path_short}:{frame.line_no}")
    counted = _interesting(frame) and key not in on_stack  # outermost call only (recursion)
    if counted:
        totals[key] = totals.get(key, 0.0) + frame.time
        on_stack.add(key)
    for child in frame.children:
        _collect(child, totals, on_stack)
    if counted:
        on_stack.discard(key)
