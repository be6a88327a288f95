"""Work waiting to be sent: demand that a queue holds rather than a client sends now.

A batch job is a backlog, not a rate: its worker takes the spare capacity the routing policy
leaves (``batch.backpressure``), so the rate it sends never passes what the pools already have
and the capacity decider, which sizes pools for the rate it measures, would never grow them for
it.  A job therefore reports what it *wants*: its rows not yet answered over the time it should
take to drain them (``rows_per_s``), per job, refreshed while it runs and expiring when the
reports stop (a worker that died, a job that finished).  The capacity decider plans for the
measured demand plus the backlog's rate, in rows/s like the planner's throughput (a 32-row request
counted as one request made a pool the job kept full look 32 times less busy); the budget ceiling
and the planner's shedding bound what it buys.  Routing is not told: it places what is sent.

Pure: the clock is an argument.  The control server keeps the book (``control.admin_http``:
``POST /backlog``); the batch worker reports (``batch.worker``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router_lib.domain import Fleet
from router_lib.routes import RouteKey

MAX_TTL_S = 300.0
DEFAULT_TTL_S = 15.0


class BacklogError(ValueError):
    """A backlog report that cannot be accepted; the message names the field and the value."""


@dataclass(frozen=True)
class BacklogReport:
    """``source``: what is waiting (a job id): a newer report from it replaces the older one."""

    source: str
    route: RouteKey
    rows_per_s: float
    expires_at_s: float
    rows_waiting: int | None = None

    def as_dict(self, now_s: float) -> dict[str, Any]:
        return {"source": self.source, "model": self.route.model, "tier": self.route.tier,
                "rows_per_s": round(self.rows_per_s, 3), "rows_waiting": self.rows_waiting,
                "expires_in_s": round(max(0.0, self.expires_at_s - now_s), 1)}


def parse_report(payload: Any, fleet: Fleet, now_s: float) -> BacklogReport:
    """A report from JSON ``{"source", "model", "tier", "rows_per_s"[, "ttl_s", "rows_waiting"]}``,
    checked against the fleet (a model some pool serves, a tier of the tier file)."""
    if not isinstance(payload, Mapping):
        raise BacklogError(f"a backlog report is a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"source", "model", "tier", "rows_per_s", "ttl_s", "rows_waiting"})
    if unknown:
        raise BacklogError(f"unknown field(s) {unknown}; known: source, model, tier, rows_per_s, ttl_s, rows_waiting")
    for name in ("source", "model", "tier"):
        if not isinstance(payload.get(name), str) or not payload[name].strip():
            raise BacklogError(f"'{name}' must be a non-empty string, got {payload.get(name)!r}")
    source, model, tier = payload["source"], payload["model"], payload["tier"]
    if len(source) > 200:
        raise BacklogError(f"'source' is {len(source)} characters long; at most 200")
    served = sorted({m for p in fleet.pools for m in p.models})
    if model not in served:
        raise BacklogError(f"model {model!r} is served by no pool of the fleet; served: {served}")
    if tier not in fleet.tiers.tiers:
        raise BacklogError(f"unknown tier {tier!r}; known: {sorted(fleet.tiers.tiers)}")
    rate = _number(payload, "rows_per_s", None)
    if rate < 0:
        raise BacklogError(f"'rows_per_s' must be >= 0, got {rate:g}")
    ttl = _number(payload, "ttl_s", DEFAULT_TTL_S)
    if not 0 < ttl <= MAX_TTL_S:
        raise BacklogError(f"'ttl_s' must be in (0, {MAX_TTL_S:g}], got {ttl:g}")
    waiting = payload.get("rows_waiting")
    if waiting is not None and (isinstance(waiting, bool) or not isinstance(waiting, int) or waiting < 0):
        raise BacklogError(f"'rows_waiting' must be a whole number >= 0, got {waiting!r}")
    return BacklogReport(source, RouteKey(model, tier), rate, now_s + ttl, waiting)


def _number(payload: Mapping[str, Any], name: str, default: float | None) -> float:
    value = payload.get(name, default)
    if value is None:
        raise BacklogError(f"missing '{name}'")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BacklogError(f"'{name}' must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BacklogBook:
    """The latest report per source; expired ones are dropped when the book is next changed or read."""

    reports: Mapping[str, BacklogReport] = field(default_factory=dict)

    def with_report(self, report: BacklogReport, now_s: float) -> BacklogBook:
        kept = {s: r for s, r in self.live(now_s).items() if s != report.source}
        if report.rows_per_s > 0:  # 0: the source has nothing left; it leaves the book at once
            kept[report.source] = report
        return BacklogBook(kept)

    def live(self, now_s: float) -> dict[str, BacklogReport]:
        return {s: r for s, r in self.reports.items() if r.expires_at_s > now_s}

    def per_route(self, now_s: float) -> dict[RouteKey, float]:
        """Rows/s wanted per route, summed over the live reports."""
        out: dict[RouteKey, float] = {}
        for r in self.live(now_s).values():
            out[r.route] = out.get(r.route, 0.0) + r.rows_per_s
        return out
