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
* A kind whose pools share their tiers (``PoolSpec.share_tiers``: one queue per priority level,
  gold's served first, ``router_lib.priority``) is one group ``(k, shared)`` instead, carrying
  every tier, with one capacity row per class ``g``: the traffic of ``g`` and of every stricter
  tier, each judged at ``S[m,k,g]``, fits ``n[k,shared]`` (a class waits behind its own level
  and the levels above it; the levels below cost it at most one running batch, which the batch
  cap of a shared pool bounds and which comes off ``g``'s bound when a looser tier has demand for
  the model).  The last row (best effort) is the pool's total load at ``max_utilisation``.  This
  nested-FIFO reading of a non-preemptive priority queue is optimistic for the lower bounded
  classes by ``1 / (1 - rho_above)`` (Cobham's mean wait); the simulator models the priority
  queue itself and judges the plan.
* Optional, for a fleet that already runs (the capacity decider re-planning): ``running``
  replicas per kind (``InstanceKind.key``) and a ``start_penalty`` fraction.  Integer
  ``a[k] >= sum_g n[k,g] - running_k`` (replicas to start) cost ``start_penalty * price_k`` each
  on top: between two plans within that margin of each other the one that starts fewer replicas
  wins, so a re-plan does not swap kinds for a saving smaller than what the swap costs (cold
  starts, and the scale-down window holding the replicas being replaced).  The plan's reported
  cost is its replicas' price only.

Kinds are explicit values (:class:`InstanceKind`): ``plan_fleet`` takes one per (accelerator,
instance type) with a profile; ``plan_kinds`` takes any list.  ``plan_single_accelerator`` solves the
same problem with one accelerator kind allowed; alone it is infeasible (with the reason) when that
kind has no profile for a demanded model.  With ``host_cpu=True`` (a fair single-kind baseline) the
accelerator's instances also serve, on their host vCPUs, the models the accelerator cannot run: a
``<accelerator>-host`` kind at the accelerator instance's price that runs those models' CPU
profiles.  That the host vCPUs are as fast as the profiled CPU is an assumption (both are a few
x86/Arm cores running ONNX Runtime); it is conservative on price, since a separate host-CPU replica
is charged a whole accelerator instance although the same instance also runs the accelerator's
replica.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from router_lib.domain import Accelerator, EmulatedOutputs, Fleet, PoolMode, PoolSpec
from router_lib.latency_model import full_batch_throughput_per_s, safe_utilisation, tail_factor
from router_lib.policy_types import PolicySettings
from router_lib.priority import shared_batch_cap

Demand = Mapping[tuple[str, str], float]  # (model, tier) -> req/s
SHARED = "shared"  # the one group of a kind whose pools share their tiers (module docstring)


@dataclass(frozen=True)
class InstanceKind:
    """One kind of replica the planner may buy.

    ``accelerator``: whose profiles its replicas run (``fleet.profiles[(model, accelerator)]``);
    ``instance_type`` and ``price_per_hour_usd``: what one replica costs; ``models``: what it serves;
    ``name``: the prefix of its pools' names (``<name>-<tier class>``).  A host-CPU kind has
    accelerator CPU and an accelerator instance's type and price (module docstring)."""

    name: str
    accelerator: Accelerator
    instance_type: str
    price_per_hour_usd: float
    models: tuple[str, ...]
    share_tiers: bool = False  # its pools share their tiers through priority levels (one group)

    @property
    def key(self) -> tuple[Accelerator, str]:
        """What a pool of this kind is recognised by: (accelerator, instance type)."""
        return self.accelerator, self.instance_type


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
    share_tiers: bool = False  # one group carrying every tier behind priority levels

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
        description of production).  Each pool serves the models of its kind.
        """
        pools = tuple(
            PoolSpec(name=p.name, accelerator=p.accelerator, instance_type=p.instance_type,
                     price_per_hour_usd=p.price_per_hour_usd, replicas=p.replicas,
                     mode=PoolMode.EMULATED if emulated and p.accelerator is not Accelerator.CPU else PoolMode.REAL,
                     outputs=EmulatedOutputs.REAL, models=p.models, share_tiers=p.share_tiers)
            for p in self.pools if p.replicas > 0
        )
        models = tuple(sorted({m for p in pools for m in p.models}))
        return Fleet(pools, base.profiles, base.tiers, base.prices, models)


def instance_kinds(fleet: Fleet, allowed: Collection[Accelerator] | None = None) -> tuple[InstanceKind, ...]:
    """One kind per (accelerator, instance type) with a profile, serving the models profiled on it
    (named after the accelerator; ``<accelerator>-<instance type>`` when it has several types)."""
    by_key: dict[tuple[Accelerator, str], list[str]] = {}
    for (model, acc), profile in sorted(fleet.profiles.items(), key=lambda kv: (kv[0][1].value, kv[0][0])):
        if allowed is None or acc in allowed:
            by_key.setdefault((acc, profile.instance_type), []).append(model)
    types_per_acc: dict[Accelerator, int] = {}
    for acc, _itype in by_key:
        types_per_acc[acc] = types_per_acc.get(acc, 0) + 1
    shared = {(p.accelerator, p.instance_type) for p in fleet.pools if p.share_tiers}
    return tuple(
        InstanceKind(acc.value if types_per_acc[acc] == 1 else f"{acc.value}-{itype}", acc, itype,
                     fleet.prices.of(itype), tuple(models), (acc, itype) in shared)
        for (acc, itype), models in by_key.items())


def host_cpu_kinds(fleet: Fleet, accelerator: Accelerator) -> tuple[InstanceKind, ...]:
    """The ``accelerator``'s instances serving on their host vCPUs the models it has no profile
    for but CPU has: accelerator CPU (those models' CPU profiles), the accelerator instance's type
    and price (module docstring: the speed of the host vCPUs is an assumption)."""
    if accelerator is Accelerator.CPU:
        return ()
    own = {m for (m, a) in fleet.profiles if a is accelerator}
    host_models = tuple(sorted({m for (m, a) in fleet.profiles if a is Accelerator.CPU} - own))
    itypes = sorted({p.instance_type for (_m, a), p in fleet.profiles.items() if a is accelerator})
    if not host_models:
        return ()
    return tuple(
        InstanceKind(f"{accelerator.value}-host" if len(itypes) == 1 else f"{accelerator.value}-host-{itype}",
                     Accelerator.CPU, itype, fleet.prices.of(itype), host_models)
        for itype in itypes)


def single_kind_kinds(fleet: Fleet, accelerator: Accelerator, *, host_cpu: bool = True) -> tuple[InstanceKind, ...]:
    """What a fleet of ``accelerator`` instances only may buy: its kinds and, with ``host_cpu``,
    their host-CPU kinds."""
    return instance_kinds(fleet, (accelerator,)) + (host_cpu_kinds(fleet, accelerator) if host_cpu else ())


def plan_fleet(demand: Demand, fleet: Fleet, *, allowed_accelerators: Collection[Accelerator] | None = None,
               settings: PolicySettings | None = None, time_limit_s: float = 20.0,
               running: Mapping[tuple[Accelerator, str], int] | None = None, start_penalty: float = 0.0,
               max_per_kind: Mapping[tuple[Accelerator, str], int] | None = None) -> Plan:
    """Cheapest fleet for ``demand`` over the fleet's profiled kinds (module docstring)."""
    allowed = tuple(sorted(set(allowed_accelerators), key=lambda a: a.value)) if allowed_accelerators else ()
    where = f" on {'/'.join(a.value for a in allowed)}" if allowed else ""
    return plan_kinds(demand, fleet, instance_kinds(fleet, allowed_accelerators), settings=settings,
                      time_limit_s=time_limit_s, where=where, allowed_accelerators=allowed, running=running,
                      start_penalty=start_penalty, max_per_kind=max_per_kind)


def plan_kinds(demand: Demand, fleet: Fleet, kinds: Sequence[InstanceKind], *, settings: PolicySettings | None = None,
               time_limit_s: float = 20.0, where: str = "", allowed_accelerators: tuple[Accelerator, ...] = (),
               running: Mapping[tuple[Accelerator, str], int] | None = None, start_penalty: float = 0.0,
               max_per_kind: Mapping[tuple[Accelerator, str], int] | None = None) -> Plan:
    """Cheapest fleet for ``demand`` built from ``kinds`` (the program of the module docstring);
    ``where`` ends the reason of an infeasible plan (" on inferentia"); ``running`` and
    ``start_penalty``: the re-planning term of the module docstring (off by default);
    ``max_per_kind``: at most this many replicas of a kind (``InstanceKind.key``) over its classes
    (the pools' max replicas: a plan beyond them cannot be run)."""
    if start_penalty < 0:
        raise ValueError(f"start_penalty must be >= 0, got {start_penalty!r}")
    settings = settings or PolicySettings()
    allowed = allowed_accelerators  # recorded on the plan
    bounds = {name: t.p99_ms for name, t in fleet.tiers.tiers.items()}
    quantiles = {name: t.target_compliance or 0.99 for name, t in fleet.tiers.tiers.items()}
    strict = sorted(bounds, key=lambda t: (bounds[t] is None, bounds[t] or 0.0))
    rank = {t: i for i, t in enumerate(strict)}
    demand = {k: float(v) for k, v in demand.items() if v > 0}
    for (_model, tier) in demand:
        if tier not in bounds:
            raise ValueError(f"demand names unknown tier {tier!r}; tiers: {sorted(bounds)}")
    groups = [(kind, g) for kind in kinds for g in ((SHARED,) if kind.share_tiers else strict)]
    # capacity rows: (group index, class); a shared group has one per class, any other group one
    rows = [(gi, c) for gi, (kind, g) in enumerate(groups) for c in (strict if g == SHARED else (g,))]

    def safe(model: str, kind: InstanceKind, c: str) -> float:
        profile = fleet.profiles[(model, kind.accelerator)]
        bound = bounds[c]
        if kind.share_tiers and bound is not None and any(m == model and rank[t] > rank[c] for m, t in demand):
            # a looser tier's batch already running is waited for: one capped execution at the
            # class's quantile comes off the bound (what the planner's queue formula leaves out)
            cap = shared_batch_cap(fleet.tiers, profile.latency_ms, profile.max_batch_size) or profile.max_batch_size
            bound -= tail_factor(profile, quantiles[c]) * profile.latency_ms(cap) / settings.headroom
            if bound <= 0:
                return 0.0
        return safe_utilisation(profile, bound, settings.headroom, settings.max_utilisation,
                                quantiles[c]) * full_batch_throughput_per_s(profile)

    # (model, tier, group index, safe throughput in its own row, {row index: 1 / S} of every row it loads)
    x_vars: list[tuple[str, str, int, float, dict[int, float]]] = []
    for gi, (kind, g) in enumerate(groups):
        for (model, tier) in sorted(demand):
            if model not in kind.models or (g != SHARED and rank[tier] < rank[g]):
                continue
            own = safe(model, kind, tier if g == SHARED else g)
            if own <= 0:
                continue
            loads = {}
            for ri, (rg, c) in enumerate(rows):
                if rg == gi and (g != SHARED or rank[tier] <= rank[c]):
                    s_c = own if c == (tier if g == SHARED else g) else safe(model, kind, c)
                    if s_c <= 0:  # a stricter class's row this tier's traffic cannot fit at all
                        break
                    loads[ri] = 1.0 / s_c
            else:
                x_vars.append((model, tier, gi, own, loads))
    for (model, tier) in sorted(demand):
        if not any(v[0] == model and v[1] == tier for v in x_vars):
            has_profile = any(model in kind.models for kind in kinds)
            why = (f"no profile for {model}{where}" if not has_profile else
                   f"no pool{where} can serve {model} within the {tier} bound ({bounds[tier]} ms)")
            return Plan(False, why, allowed_accelerators=allowed)
    if not demand:
        return Plan(True, "no demand", (), 0.0, allowed)
    n_groups, n_x = len(groups), len(x_vars)
    # Start variables (one per kind) only when re-planning a running fleet with a penalty.
    starts = list(kinds) if running is not None and start_penalty > 0 else []
    n_vars = n_groups + n_x + len(starts)
    cost = np.concatenate([[kind.price_per_hour_usd for kind, _g in groups], np.zeros(n_x),
                           [start_penalty * kind.price_per_hour_usd for kind in starts]])
    cost[n_groups:n_groups + n_x] = 1e-9  # tie-break: among equal-cost plans, prefer less traffic-weighted capacity use
    demand_keys = sorted(demand)
    a_demand = np.zeros((len(demand_keys), n_vars))
    a_cap = np.zeros((len(rows), n_vars))
    for j, (model, tier, _gi, _s, loads) in enumerate(x_vars):
        a_demand[demand_keys.index((model, tier)), n_groups + j] = 1.0
        for ri, coeff in loads.items():
            a_cap[ri, n_groups + j] = coeff
    for ri, (gi, _c) in enumerate(rows):
        a_cap[ri, gi] = -1.0
    d = np.array([demand[k] for k in demand_keys])
    constraints = [LinearConstraint(a_demand, d, d), LinearConstraint(a_cap, -np.inf, 0.0)]
    if starts:  # sum_g n[k,g] - a[k] <= running_k
        a_start = np.zeros((len(starts), n_vars))
        have = np.zeros(len(starts))
        for si, kind in enumerate(starts):
            for gi, (k, _g) in enumerate(groups):
                if k == kind:
                    a_start[si, gi] = 1.0
            a_start[si, n_groups + n_x + si] = -1.0
            have[si] = float(running.get(kind.key, 0)) if running is not None else 0.0
        constraints.append(LinearConstraint(a_start, -np.inf, have))
    if max_per_kind:
        capped = [kind for kind in kinds if kind.key in max_per_kind]
        a_max = np.zeros((len(capped), n_vars))
        for ci, kind in enumerate(capped):
            for gi, (k, _g) in enumerate(groups):
                if k == kind:
                    a_max[ci, gi] = 1.0
        if capped:
            constraints.append(LinearConstraint(a_max, -np.inf, np.array([float(max_per_kind[k.key]) for k in capped])))
    integrality = np.concatenate([np.ones(n_groups), np.zeros(n_x), np.ones(len(starts))])
    upper = np.full(n_vars, np.inf)
    res = milp(cost, constraints=constraints, integrality=integrality, bounds=Bounds(0, upper),
               options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6})
    if res.x is None:
        return Plan(False, f"solver: {res.message}", allowed_accelerators=allowed)
    replicas = [int(round(v)) for v in res.x[:n_groups]]
    pools: list[PlannedPool] = []
    for gi, (kind, g) in enumerate(groups):
        if replicas[gi] == 0:
            continue
        traffic: dict[tuple[str, str], float] = {}
        busy = dict.fromkeys((ri for ri, (rg, _c) in enumerate(rows) if rg == gi), 0.0)
        for j, (model, tier, gj, _s, loads) in enumerate(x_vars):
            if gj == gi and res.x[n_groups + j] > 1e-6:
                traffic[(model, tier)] = float(res.x[n_groups + j])
                for ri, coeff in loads.items():
                    busy[ri] += res.x[n_groups + j] * coeff
        pools.append(PlannedPool(
            name=f"{kind.name}-{g}", accelerator=kind.accelerator, instance_type=kind.instance_type,
            tier_class=strict[0] if g == SHARED else g, replicas=replicas[gi], price_per_hour_usd=kind.price_per_hour_usd,
            models=kind.models, traffic=traffic, utilisation=max(busy.values(), default=0.0) / replicas[gi],
            share_tiers=g == SHARED,
        ))
    total = sum(p.cost_per_hour_usd for p in pools)
    return Plan(True, "optimal" if res.status == 0 else f"solver: {res.message}", tuple(pools), total, allowed)


def plan_single_accelerator(demand: Demand, fleet: Fleet, accelerator: Accelerator, *,
                            settings: PolicySettings | None = None, host_cpu: bool = False) -> Plan:
    """Cheapest fleet of ``accelerator`` instances only.  Without ``host_cpu``, infeasible when the
    accelerator cannot serve some demanded model; with it, its instances' host vCPUs serve those
    models (:func:`host_cpu_kinds`), as a real single-kind fleet would."""
    kinds = single_kind_kinds(fleet, accelerator, host_cpu=host_cpu)
    host = any(k.accelerator is not accelerator for k in kinds)
    where = f" on {accelerator.value}" + (" (+ its host CPU)" if host else "")
    return plan_kinds(demand, fleet, kinds, settings=settings, where=where, allowed_accelerators=(accelerator,))
