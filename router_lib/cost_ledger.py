"""The cost ledger: what the fleet has cost so far, per pool and attributed per route.

Money is replicas x price x time.  Each tick adds, per pool, ``billed replicas x price x dt``:
billed replicas are every replica that exists (ready, starting or terminating: a node that is
booting or draining is paid for).  The pool's cost for the interval is attributed to the routes it
served in proportion to their request rates on it (route demand x the route's weight share on the
pool); a pool that served nothing books its cost as idle (``IDLE``), so the attributed figures
always add up to the pool's cost.

Pure (no clock, no I/O): the control loop calls ``accrue`` once per tick and keeps the state in
its persisted record, so a restarted server continues the same ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router_lib.routes import RouteKey, RouteWeights

IDLE = "idle"
_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class LedgerState:
    """``started_s``/``last_s``: clock of the first and last accrual.  ``usd_by_pool``: integrated
    $ per pool.  ``usd_by_route``: the same money attributed to ``"model/tier"`` (or ``IDLE``),
    per pool.  ``per_hour_usd``: the fleet's rate at the last accrual, per pool."""

    started_s: float
    last_s: float
    usd_by_pool: Mapping[str, float] = field(default_factory=dict)
    usd_by_route: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    per_hour_usd: Mapping[str, float] = field(default_factory=dict)

    @property
    def total_usd(self) -> float:
        return sum(self.usd_by_pool.values())

    @property
    def fleet_per_hour_usd(self) -> float:
        return sum(self.per_hour_usd.values())

    def attributed_usd(self) -> dict[str, float]:
        """Integrated $ per route (``"model/tier"``) over all pools, plus ``IDLE``."""
        out: dict[str, float] = {}
        for routes in self.usd_by_route.values():
            for route, usd in routes.items():
                out[route] = out.get(route, 0.0) + usd
        return out

    def to_json(self) -> dict[str, Any]:
        return {"started_s": self.started_s, "last_s": self.last_s, "usd_by_pool": dict(self.usd_by_pool),
                "usd_by_route": {p: dict(r) for p, r in self.usd_by_route.items()},
                "per_hour_usd": dict(self.per_hour_usd)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerState:
        return cls(float(data["started_s"]), float(data["last_s"]),
                   {str(p): float(v) for p, v in dict(data.get("usd_by_pool", {})).items()},
                   {str(p): {str(r): float(v) for r, v in dict(rs).items()}
                    for p, rs in dict(data.get("usd_by_route", {})).items()},
                   {str(p): float(v) for p, v in dict(data.get("per_hour_usd", {})).items()})


def route_rates_by_pool(routes: Mapping[RouteKey, RouteWeights], demand_per_s: Mapping[RouteKey, float]
                        ) -> dict[str, dict[str, float]]:
    """req/s each pool serves per route: the route's demand split by its weights."""
    out: dict[str, dict[str, float]] = {}
    for key, route in routes.items():
        total = route.total
        rate = demand_per_s.get(key, 0.0)
        if total <= 0 or rate <= 0:
            continue
        for p in route.pools:
            if p.weight > 0:
                per = out.setdefault(p.pool, {})
                per[str(key)] = per.get(str(key), 0.0) + rate * p.weight / total
    return out


def accrue(state: LedgerState | None, now_s: float, billed_replicas: Mapping[str, int],
           price_per_hour_usd: Mapping[str, float], rates_by_pool: Mapping[str, Mapping[str, float]]
           ) -> LedgerState:
    """Add the cost of ``[state.last_s, now_s)`` at the replica counts and rates given now."""
    per_hour = {pool: n * price_per_hour_usd[pool] for pool, n in billed_replicas.items()}
    if state is None:
        return LedgerState(now_s, now_s, {p: 0.0 for p in per_hour}, {}, per_hour)
    dt_h = max(0.0, now_s - state.last_s) / _SECONDS_PER_HOUR
    by_pool = dict(state.usd_by_pool)
    by_route = {p: dict(r) for p, r in state.usd_by_route.items()}
    # The interval is charged at the rate in force since the last accrual (what was running then).
    for pool, rate in state.per_hour_usd.items():
        usd = rate * dt_h
        if usd <= 0:
            continue
        by_pool[pool] = by_pool.get(pool, 0.0) + usd
        served = {r: v for r, v in rates_by_pool.get(pool, {}).items() if v > 0}
        book = by_route.setdefault(pool, {})
        if not served:
            book[IDLE] = book.get(IDLE, 0.0) + usd
            continue
        total = sum(served.values())
        for route, v in served.items():
            book[route] = book.get(route, 0.0) + usd * v / total
    for pool in per_hour:
        by_pool.setdefault(pool, 0.0)
    return LedgerState(state.started_s, now_s, by_pool, by_route, per_hour)
