"""Fleet planner: the cheapest replicas per pool and traffic split meeting every tier's bound.

Solved as a mixed-integer linear program with ``scipy.optimize.milp`` (HiGHS):

* Pool groups ``(k, g)``: an instance kind ``k`` = (accelerator, instance type) and a tier class
  ``g``, the strictest tier the group serves.  Integer ``n[k,g] >= 0`` replicas.  Separate groups
  per class exist because one pool's latency is set by its total load: a gold-class pool must stay
  at gold's safe utilisation even for the silver or bronze traffic it also carries.
* Continuous ``x[m,t,k,g] >= 0`` req/s of (model m, tier t) sent to group (k, g); allowed when
  tier t is no stricter than class g, kind k has a profile for m, and ``S[m,k,g] > 0``, where
  ``S`` = safe throughput per replica of m on k under g's bound at g's target-compliance quantile
  (``router_lib.latency_model``, the same formula the live policy uses, with its ``headroom`` and
  ``max_utilisation``).
* Demand: ``sum_{k,g} x[m,t,k,g] = d[m,t]``.
* Capacity (replica time is shared by the group's models and tiers):
  ``sum_{m,t} x[m,t,k,g] / S[m,k,g] <= n[k,g]``.
* Objective: ``min sum price_k * n[k,g]`` ($/hour).

``plan_single_accelerator`` solves the same problem with one accelerator kind allowed; it is
infeasible (with the reason) when that kind has no profile for a demanded model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from router_lib.domain import Accelerator, EmulatedOutputs, Fleet, PoolMode, PoolSpec
from router_lib.latency_model import full_batch_throughput_per_s, safe_utilisation
from router_lib.policy_types import PolicySettings

Demand = Mapping[tuple[str, str], float]  # (model, tier) -> req/s


@dataclass(frozen=True)
class PlannedPool:
    """One pool group of the plan.  ``traffic``: (model, tier) -> req/s planned to it."""

    name: str
    accelerator: Accelerator
    instance_type: str
    tier_class: str
    replicas: int
    price_per_hour_usd: float
    models: tuple[str, ...]
    traffic: Mapping[tuple[str, str], float] = field(default_factory=dict)
    utilisation: float = 0.0  # planned busy fraction relative to the class's safe utilisation

    @property
    def cost_per_hour_usd(self) -> float:
        return self.replicas * self.price_per_hour_usd


@dataclass(frozen=True)
class Plan:
    feasible: bool
    reason: str
    pools: tuple[PlannedPool, ...] = ()
    cost_per_hour_usd: float = math.inf
    allowed_accelerators: tuple[Accelerator, ...] = ()

    def split(self, model: str, tier: str) -> dict[str, float]:
        """Planned req/s of (model, tier) per pool name."""
        return {p.name: p.traffic[(model, tier)] for p in self.pools if (model, tier) in p.traffic}

    def to_fleet(self, base: Fleet, emulated: bool = True) -> Fleet:
        """A :class:`Fleet` with the planned pools (for the simulator or a deployment).

        Non-CPU pools are emulated on this machine; ``emulated=False`` keeps them ``real`` (for a
        description of production).  Each pool serves every model its kind has a profile for.
        """
        pools = tuple(
            PoolSpec(name=p.name, accelerator=p.accelerator, instance_type=p.instance_type,
                     price_per_hour_usd=p.price_per_hour_usd, replicas=p.replicas,
                     mode=PoolMode.EMULATED if emulated and p.accelerator is not Accelerator.CPU else PoolMode.REAL,
                     outputs=EmulatedOutputs.REAL, models=p.models)
            for p in self.pools if p.replicas > 0
        )
        models = tuple(sorted({m for p in pools for m in p.models}))
        return Fleet(pools, base.profiles, base.tiers, base.prices, models)


def _kinds(fleet: Fleet, allowed: Collection[Accelerator] | None) -> dict[tuple[Accelerator, str], list[str]]:
    """(accelerator, instance type) -> models with a profile on it."""
    kinds: dict[tuple[Accelerator, str], list[str]] = {}
    for (model, acc), profile in sorted(fleet.profiles.items(), key=lambda kv: (kv[0][1].value, kv[0][0])):
        if allowed is None or acc in allowed:
            kinds.setdefault((acc, profile.instance_type), []).append(model)
    return kinds


def plan_fleet(demand: Demand, fleet: Fleet, *, allowed_accelerators: Collection[Accelerator] | None = None,
               settings: PolicySettings | None = None, time_limit_s: float = 20.0) -> Plan:
    """Cheapest fleet for ``demand`` (see the module docstring for the program)."""
    settings = settings or PolicySettings()
    allowed = tuple(sorted(set(allowed_accelerators), key=lambda a: a.value)) if allowed_accelerators else ()
    bounds = {name: t.p99_ms for name, t in fleet.tiers.tiers.items()}
    quantiles = {name: t.target_compliance or 0.99 for name, t in fleet.tiers.tiers.items()}
    strict = sorted(bounds, key=lambda t: (bounds[t] is None, bounds[t] or 0.0))
    rank = {t: i for i, t in enumerate(strict)}
    demand = {k: float(v) for k, v in demand.items() if v > 0}
    for (_model, tier) in demand:
        if tier not in bounds:
            raise ValueError(f"demand names unknown tier {tier!r}; tiers: {sorted(bounds)}")
    kinds = _kinds(fleet, allowed_accelerators)
    prices = fleet.prices.price_per_hour_usd
    groups = [(kind, g) for kind in kinds for g in strict]
    x_vars: list[tuple[str, str, int, float]] = []  # (model, tier, group index, safe throughput)
    for gi, ((acc, itype), g) in enumerate(groups):
        for (model, tier) in sorted(demand):
            if model not in kinds[(acc, itype)] or rank[tier] < rank[g]:
                continue
            profile = fleet.profiles[(model, acc)]
            s = safe_utilisation(profile, bounds[g], settings.headroom, settings.max_utilisation, quantiles[g])
            if s > 0:
                x_vars.append((model, tier, gi, s * full_batch_throughput_per_s(profile)))
    where = f" on {'/'.join(a.value for a in allowed)}" if allowed else ""
    for (model, tier) in sorted(demand):
        if not any(v[0] == model and v[1] == tier for v in x_vars):
            has_profile = any(model in ms for ms in kinds.values())
            why = (f"no profile for {model}{where}" if not has_profile else
                   f"no pool{where} can serve {model} within the {tier} bound ({bounds[tier]} ms)")
            return Plan(False, why, allowed_accelerators=allowed)
    if not demand:
        return Plan(True, "no demand", (), 0.0, allowed)
    n_groups, n_x = len(groups), len(x_vars)
    cost = np.concatenate([[prices[itype] for (acc, itype), _g in groups], np.zeros(n_x)])
    cost[n_groups:] = 1e-9  # tie-break: among equal-cost plans, prefer less traffic-weighted capacity use
    demand_keys = sorted(demand)
    a_demand = np.zeros((len(demand_keys), n_groups + n_x))
    a_cap = np.zeros((n_groups, n_groups + n_x))
    for j, (model, tier, gi, s) in enumerate(x_vars):
        a_demand[demand_keys.index((model, tier)), n_groups + j] = 1.0
        a_cap[gi, n_groups + j] = 1.0 / s
    for gi in range(n_groups):
        a_cap[gi, gi] = -1.0
    d = np.array([demand[k] for k in demand_keys])
    constraints = [LinearConstraint(a_demand, d, d), LinearConstraint(a_cap, -np.inf, 0.0)]
    integrality = np.concatenate([np.ones(n_groups), np.zeros(n_x)])
    upper = np.full(n_groups + n_x, np.inf)
    res = milp(cost, constraints=constraints, integrality=integrality, bounds=Bounds(0, upper),
               options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6})
    if res.x is None:
        return Plan(False, f"solver: {res.message}", allowed_accelerators=allowed)
    replicas = [int(round(v)) for v in res.x[:n_groups]]
    pools: list[PlannedPool] = []
    for gi, ((acc, itype), g) in enumerate(groups):
        if replicas[gi] == 0:
            continue
        traffic: dict[tuple[str, str], float] = {}
        busy = 0.0
        for j, (model, tier, gj, s) in enumerate(x_vars):
            if gj == gi and res.x[n_groups + j] > 1e-6:
                traffic[(model, tier)] = float(res.x[n_groups + j])
                busy += res.x[n_groups + j] / s
        pools.append(PlannedPool(
            name=f"{acc.value}-{g}", accelerator=acc, instance_type=itype, tier_class=g, replicas=replicas[gi],
            price_per_hour_usd=prices[itype], models=tuple(kinds[(acc, itype)]), traffic=traffic,
            utilisation=busy / replicas[gi],
        ))
    total = sum(p.cost_per_hour_usd for p in pools)
    return Plan(True, "optimal" if res.status == 0 else f"solver: {res.message}", tuple(pools), total, allowed)


def plan_single_accelerator(demand: Demand, fleet: Fleet, accelerator: Accelerator, *,
                            settings: PolicySettings | None = None) -> Plan:
    """Cheapest fleet using only ``accelerator``; infeasible when it cannot serve some demand."""
    return plan_fleet(demand, fleet, allowed_accelerators=(accelerator,), settings=settings)
