"""What the capacity decider carries from one tick to the next, and its JSON form.

The state goes back to the caller with every decision and comes in again with the next tick
(it never hides in the decider), and the control loop persists it in its state record, so a
restarted server resumes the windows, the flap guard and the cached plan from the same instant.
``to_json`` gives plain JSON types only; ``from_json(to_json(s)) == s``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router_lib.routes import RouteKey


@dataclass(frozen=True)
class PoolMemory:
    """One pool's memory.

    ``targets``: (time_s, raw target) over the scale-down window, raw targets strictly
    decreasing (a target followed by a higher or equal one can never be the window's maximum
    again), so the first is the maximum and the list stays a few entries long.
    ``changed_s`` / ``direction``: when desired last changed and which way (+1 up, -1 down;
    None / 0 before the first change), for the flap guard.
    """

    desired: int
    targets: tuple[tuple[float, int], ...] = ()
    changed_s: float | None = None
    direction: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"desired": self.desired, "targets": [[t, n] for t, n in self.targets],
                "changed_s": self.changed_s, "direction": self.direction}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PoolMemory:
        changed = data.get("changed_s")
        return cls(int(data["desired"]), tuple((float(t), int(n)) for t, n in data.get("targets", ())),
                   None if changed is None else float(changed), int(data.get("direction", 0)))


@dataclass(frozen=True)
class Placement:
    """What the plan sends one pool of one model: the tiers, and the req/s (with the headroom)."""

    tiers: tuple[str, ...]
    rate_per_s: float

    def to_json(self) -> dict[str, Any]:
        return {"tiers": list(self.tiers), "rate_per_s": self.rate_per_s}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Placement:
        return cls(tuple(str(t) for t in data["tiers"]), float(data["rate_per_s"]))


@dataclass(frozen=True)
class CachedPlan:
    """The last plan, kept while demand stays within ``replan_tolerance`` of what it was made for.

    ``demand_per_s``: the demand (before headroom) it was made for.  ``made_for``: everything else
    it depends on, as text (the usable pools with their bounds and prices, the budget and what drained
    pools cost, the headroom and the policy's settings): any change there re-plans.  ``targets``: replicas per pool after any shedding; ``unshed``:
    before it (equal when nothing was shed).  ``shed``: routes left out for the budget, loosest
    tier first.  ``feasible`` False: no plan meets the demand (``reason`` says why; the decider
    keeps current counts).  ``over_budget``: even the strictest tier alone costs more than the
    budget (it is kept anyway).  ``placed``: per pool with a target, model -> what the plan sends it
    (tiers and req/s; the live signals judge a pool on these: see ``router_lib.capacity``).
    """

    demand_per_s: Mapping[RouteKey, float]
    made_for: str
    feasible: bool
    reason: str
    targets: Mapping[str, int] = field(default_factory=dict)
    unshed: Mapping[str, int] = field(default_factory=dict)
    shed: tuple[RouteKey, ...] = ()
    over_budget: bool = False
    placed: Mapping[str, Mapping[str, Placement]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"demand_per_s": [[k.model, k.tier, v] for k, v in sorted(self.demand_per_s.items())],
                "made_for": self.made_for, "feasible": self.feasible, "reason": self.reason,
                "targets": dict(self.targets), "unshed": dict(self.unshed),
                "shed": [[k.model, k.tier] for k in self.shed], "over_budget": self.over_budget,
                "placed": {p: {m: pl.to_json() for m, pl in sorted(ms.items())} for p, ms in sorted(self.placed.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CachedPlan:
        return cls(
            demand_per_s={RouteKey(str(m), str(t)): float(v) for m, t, v in data["demand_per_s"]},
            made_for=str(data["made_for"]), feasible=bool(data["feasible"]),
            reason=str(data["reason"]), targets={str(p): int(n) for p, n in dict(data["targets"]).items()},
            unshed={str(p): int(n) for p, n in dict(data["unshed"]).items()},
            shed=tuple(RouteKey(str(m), str(t)) for m, t in data["shed"]),
            over_budget=bool(data.get("over_budget", False)),
            placed={str(p): {str(m): Placement.from_json(pl) for m, pl in dict(ms).items()}
                    for p, ms in dict(data.get("placed", {})).items()},
        )


@dataclass(frozen=True)
class CapacityState:
    """Everything carried between ticks: each pool's memory, the cached plan, the last tick's time."""

    pools: Mapping[str, PoolMemory] = field(default_factory=dict)
    plan: CachedPlan | None = None
    time_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "pools": {name: m.to_json() for name, m in sorted(self.pools.items())},
                "plan": None if self.plan is None else self.plan.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CapacityState:
        """The state ``to_json`` wrote (a ``KeyError`` or ``ValueError`` names what is missing or wrong)."""
        plan = data.get("plan")
        return cls(pools={str(name): PoolMemory.from_json(m) for name, m in dict(data["pools"]).items()},
                   plan=None if plan is None else CachedPlan.from_json(plan), time_s=float(data.get("time_s", 0.0)))
