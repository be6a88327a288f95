"""Simulation-in-the-loop fleet search: the cheapest fleet that the *simulator* shows meeting every
SLA, starting from the MILP plan and from every right-sized single-kind fleet.

Why: the MILP (``router_lib.planner``) sizes fleets with the latency model, an approximation in
both directions (issue #12 found a CPU-only plan of 32 replicas where 6 met every SLA in
simulation, and heterogeneous plans dearer than a single-kind fleet on 2 of 5 new mixes).
Right-sizing only shrinks pools; it never trades one kind of replica for another, so a plan built
on a wrong latency model stays wrong.  Here the simulator is the judge and plans are starting points.

Moves from a fleet (each lowers the cost; adding a replica alone never does, so an add is always
half of a swap):

* **remove** one replica of a pool;
* **merge**: remove one replica and pool the rest of two pools of the same kind into one (tier
  isolation keeps a looser tier off a stricter tier's pool while it can, so one shared pool may
  need fewer replicas than two kept apart: issue #12's bursty mix met its SLAs with 6 CPU
  replicas in one pool, not with 6 split 3 + 3);
* **swap** replicas of one kind for replicas of another, as the smallest exchanges that lower the
  cost: one replica of the dearer kind for one, or for as many as it pays for, of the cheaper
  (1 inf2 at $0.758 for 5 c7g at $0.145), or as few replicas of the cheaper kind as pay for one of
  the dearer (6 c7g for 1 inf2).  One-for-one swaps alone would never trade a $0.758 replica's
  capacity for five $0.145 ones.  The added replicas join the kind's pool of the same tier class,
  else its largest pool, else a new pool.

Descent: a fleet's moves are tried from the largest saving down; the first whose simulation meets
every target is taken, and the new fleet's moves are tried next.  It stops when no move lowers the
cost while the SLAs hold (a local optimum) or when its budget (simulations, seconds) runs out; the
fleet it stops on meets the SLAs either way.  The result is the cheapest fleet reached from any
start, so it is never dearer than a start that meets the SLAs: with every single-kind fleet that
meets them among the starts, no single-kind fleet is cheaper, by construction.

Cost: one simulation of the trace per move tried (about 1 s for the reference workload's 354,521
requests on this 2-core VM).  A move whose fleet cannot keep up with the mean demand is ruled out
without one (the simulator gives each (pool, model) its own instances, so capacity counts per
model), and each (fleet, settings) is simulated once (:class:`Judge` caches).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from router_lib.domain import Accelerator, EmulatedOutputs, Fleet, PoolMode, PoolSpec
from router_lib.latency_model import full_batch_throughput_per_s
from router_lib.planner import InstanceKind
from router_lib.simulator import SimResult, SimSettings, simulate
from router_lib.workload import Trace

Progress = Callable[[str], None]
BEST_EFFORT_P99_LIMIT_MS = 1000.0
COST_EPSILON_USD = 1e-9  # $/h below which two fleets cost the same (float sums of prices)


def fleet_cost(fleet: Fleet) -> float:
    """$/h of ``fleet``: replicas x price, summed over its pools."""
    return sum(p.replicas * p.price_per_hour_usd for p in fleet.pools)


def describe(fleet: Fleet) -> str:
    return ", ".join(f"{p.name} x{p.replicas}" for p in fleet.pools) or "(no pool)"


def meets_targets(result: SimResult, fleet: Fleet, best_effort_p99_limit_ms: float = BEST_EFFORT_P99_LIMIT_MS) -> bool:
    """Every tier with a target compliance meets it, best-effort tiers keep up (p99 under
    ``best_effort_p99_limit_ms``: a fleet whose bronze queue grows without bound does not serve
    bronze, even if no bound was promised), and no request was unroutable."""
    if result.unroutable_requests:
        return False
    for name, tier in fleet.tiers.tiers.items():
        stats = result.by_tier.get(name)
        if stats is None or not stats.count:
            continue
        if tier.target_compliance is not None:
            if stats.compliance is None or stats.compliance < tier.target_compliance:
                return False
        elif tier.p99_ms is None and not stats.p99_ms <= best_effort_p99_limit_ms:
            return False
    return True


def keeps_up(fleet: Fleet, mean_demand: Mapping[tuple[str, str], float]) -> bool:
    """A necessary condition for meeting the SLAs, checked without simulating: every demanded
    model's mean rate is below the full-batch throughput of the replicas serving it (at or past it
    the queue grows for the whole trace).  Per model, because the simulator gives every (pool,
    model) its own instances."""
    rate: dict[str, float] = {}
    for (model, _tier), r in mean_demand.items():
        rate[model] = rate.get(model, 0.0) + r
    for model, r in rate.items():
        if r <= 0:
            continue
        capacity = 0.0
        for pool in fleet.pools:
            profile = fleet.profiles.get((model, pool.accelerator))
            if profile is not None and model in pool.models:
                capacity += pool.replicas * full_batch_throughput_per_s(profile)
        if r >= capacity:
            return False
    return True


class Judge:
    """Simulates fleets on one trace with the policy in the loop and says whether they meet every
    target.  Results are cached by (fleet, settings); ``simulations`` counts those actually run."""

    def __init__(self, trace: Trace, mean_demand: Mapping[tuple[str, str], float]) -> None:
        self.trace = trace
        self.mean_demand = dict(mean_demand)
        self.simulations = 0
        self.simulated_s = 0.0
        self._cache: dict[tuple[tuple[object, ...], SimSettings], tuple[bool, SimResult, Fleet]] = {}

    @staticmethod
    def _key(fleet: Fleet, settings: SimSettings) -> tuple[tuple[object, ...], SimSettings]:
        pools = tuple(sorted((p.name, p.accelerator.value, p.instance_type, p.price_per_hour_usd, p.replicas, p.models)
                             for p in fleet.pools))
        return pools, settings

    def judge(self, fleet: Fleet, settings: SimSettings) -> tuple[bool, SimResult]:
        """(meets every target, the simulation) for ``fleet`` run with ``settings``."""
        key = self._key(fleet, settings)
        if key not in self._cache:
            started = time.monotonic()
            result = simulate(fleet, self.trace, settings, initial_demand=self.mean_demand)
            self.simulated_s += time.monotonic() - started
            self.simulations += 1
            self._cache[key] = (meets_targets(result, fleet), result, fleet)
        ok, result, _fleet = self._cache[key]
        return ok, result

    def cheapest_met(self, kinds: Sequence[InstanceKind]) -> tuple[Fleet, SimSettings, SimResult] | None:
        """The cheapest fleet judged so far that met every target and holds only ``kinds``' pools
        (ties: the first judged)."""
        keys = {k.key for k in kinds}
        best: tuple[Fleet, SimSettings, SimResult] | None = None
        for (_pools, settings), (ok, result, fleet) in self._cache.items():
            if ok and fleet.pools and all((p.accelerator, p.instance_type) in keys for p in fleet.pools):
                if best is None or fleet_cost(fleet) < fleet_cost(best[0]) - COST_EPSILON_USD:
                    best = (fleet, settings, result)
        return best


def with_replicas(fleet: Fleet, replicas: Mapping[str, int], added: Sequence[PoolSpec] = ()) -> Fleet:
    """``fleet`` with new replica counts for the named pools and ``added`` pools appended; pools
    left with no replica are dropped and the fleet's models follow its pools."""
    pools = tuple(replace(p, replicas=replicas.get(p.name, p.replicas)) for p in fleet.pools) + tuple(added)
    pools = tuple(p for p in pools if p.replicas > 0)
    return replace(fleet, pools=pools, models=tuple(sorted({m for p in pools for m in p.models})))


def right_size(fleet: Fleet, settings: SimSettings, judge: Judge,
               progress: Progress | None = None) -> tuple[Fleet, SimResult]:
    """Shrink each pool, dearest first, to the fewest replicas with which the simulation still
    meets every target (binary search per pool: ~log2(replicas) simulations each).  A fleet that
    misses the targets comes back as it is."""
    ok, best = judge.judge(fleet, settings)
    if not ok:
        return fleet, best
    for pool in sorted(fleet.pools, key=lambda p: -p.price_per_hour_usd):
        current = next(p for p in fleet.pools if p.name == pool.name).replicas
        low, high = 0, current  # high is known to pass
        found: tuple[Fleet, SimResult] | None = None
        while low < high:
            mid = (low + high) // 2
            candidate = with_replicas(fleet, {pool.name: mid})
            passed = False
            if keeps_up(candidate, judge.mean_demand):
                passed, result = judge.judge(candidate, settings)
            if progress:
                progress(f"    try {pool.name} x{mid}: {'meets' if passed else 'misses'} the SLAs")
            if passed:
                high, found = mid, (candidate, result)
            else:
                low = mid + 1
        if found is not None:
            fleet, best = found
    return fleet, best


@dataclass(frozen=True)
class Move:
    """Take ``removals`` (pool -> replicas) out of a fleet and add ``added`` replicas of a pool
    (an existing pool's name, or a new pool)."""

    description: str
    saving_per_hour_usd: float
    removals: Mapping[str, int]
    added: PoolSpec | None = None

    def apply(self, fleet: Fleet) -> Fleet:
        counts = {p.name: p.replicas - self.removals.get(p.name, 0) for p in fleet.pools}
        new: list[PoolSpec] = []
        if self.added is not None:
            if self.added.name in counts:
                counts[self.added.name] += self.added.replicas
            else:
                new.append(self.added)
        return with_replicas(fleet, counts, new)


def _kind_of(pool: PoolSpec, kinds: Sequence[InstanceKind]) -> InstanceKind | None:
    return next((k for k in kinds if k.key == (pool.accelerator, pool.instance_type)), None)


def _tier_class(pool: PoolSpec, kinds: Sequence[InstanceKind]) -> str:
    """The part of a planned pool's name after its kind (``cpu-gold`` -> ``gold``; "" if none)."""
    kind = _kind_of(pool, kinds)
    prefix = f"{kind.name}-" if kind else ""
    return pool.name[len(prefix):] if prefix and pool.name.startswith(prefix) else ""


def _target_pool(fleet: Fleet, kind: InstanceKind, tier_class: str, replicas: int) -> PoolSpec:
    """Where ``replicas`` of ``kind`` go: its pool of ``tier_class``, else its largest, else new."""
    own = [p for p in fleet.pools if (p.accelerator, p.instance_type) == kind.key]
    base_name = f"{kind.name}-{tier_class}" if tier_class else kind.name
    same = [p for p in own if p.name == base_name]
    if same or own:
        target = same[0] if same else max(own, key=lambda p: (p.replicas, p.name))
        return replace(target, replicas=replicas)
    taken = {p.name for p in fleet.pools}
    name, n = base_name, 2
    while name in taken:
        name, n = f"{base_name}-{n}", n + 1
    mode = PoolMode.REAL if kind.accelerator is Accelerator.CPU else PoolMode.EMULATED
    return PoolSpec(name=name, accelerator=kind.accelerator, instance_type=kind.instance_type,
                    price_per_hour_usd=kind.price_per_hour_usd, replicas=replicas, mode=mode,
                    outputs=EmulatedOutputs.REAL, models=kind.models)


def _take(fleet: Fleet, first: PoolSpec, count: int) -> dict[str, int] | None:
    """``count`` replicas of ``first``'s kind: from ``first``, then its kind's largest pools."""
    same = [p for p in fleet.pools if (p.accelerator, p.instance_type) == (first.accelerator, first.instance_type)]
    order = [first] + sorted((p for p in same if p.name != first.name), key=lambda p: (-p.replicas, p.name))
    out: dict[str, int] = {}
    for p in order:
        n = min(p.replicas, count)
        if n:
            out[p.name] = n
            count -= n
        if count == 0:
            return out
    return None


def candidate_moves(fleet: Fleet, kinds: Sequence[InstanceKind]) -> list[Move]:
    """Every move of the module docstring that lowers the cost, largest saving first (ties by
    description, so the search is deterministic)."""
    moves = [Move(f"remove 1 {p.name}", p.price_per_hour_usd, {p.name: 1}) for p in fleet.pools]
    for p in fleet.pools:
        for q in fleet.pools:
            if q.name != p.name and (q.accelerator, q.instance_type) == (p.accelerator, p.instance_type):
                merged = replace(p, replicas=p.replicas + q.replicas - 1)
                moves.append(Move(f"merge {q.name} into {p.name}, 1 fewer", p.price_per_hour_usd,
                                  {q.name: q.replicas, p.name: p.replicas}, merged))
    for p in fleet.pools:
        a = p.price_per_hour_usd
        for kind in kinds:
            b = kind.price_per_hour_usd
            if kind.key == (p.accelerator, p.instance_type) or b == a:
                continue
            # (replicas of p's kind out, replicas of kind in)
            exchanges = {(1, 1), (1, math.ceil(a / b - 1e-9) - 1)} if b < a else {(math.floor(b / a + 1e-9) + 1, 1)}
            for out_n, in_n in sorted(exchanges):
                saving = out_n * a - in_n * b
                removals = _take(fleet, p, out_n)
                if in_n < 1 or saving <= COST_EPSILON_USD or removals is None:
                    continue
                target = _target_pool(fleet, kind, _tier_class(p, kinds), in_n)
                moves.append(Move(f"swap {out_n} {p.name} for {in_n} {target.name}", saving, removals, target))
    unique: dict[str, Move] = {}
    for m in moves:
        unique.setdefault(m.description, m)
    return sorted(unique.values(), key=lambda m: (-m.saving_per_hour_usd, m.description))


@dataclass(frozen=True)
class SearchLimits:
    """Budget of one search: simulations it may run (cache hits are free) and wall seconds.  Once
    spent, moves stop; the starts are still judged (mostly cached), so the guarantee holds."""

    max_simulations: int = 60
    time_limit_s: float = 180.0


@dataclass(frozen=True)
class Start:
    label: str  # where the fleet comes from ("MILP plan", "cpu only", ...)
    fleet: Fleet
    settings: SimSettings


@dataclass(frozen=True)
class Descent:
    """What became of one start: its $/h (inf when it missed the SLAs), the $/h it descended to,
    the moves taken and why it stopped ("local optimum", "budget: ...", "misses the SLAs")."""

    start: str
    start_cost_per_hour_usd: float
    cost_per_hour_usd: float
    moves: tuple[str, ...]
    stopped: str


@dataclass(frozen=True)
class SearchResult:
    """The cheapest fleet found, from ``start`` by ``moves``; ``descents``: every start's, in the
    order they were taken (cheapest start first)."""

    start: str
    fleet: Fleet
    sim: SimResult
    settings: SimSettings
    moves: tuple[str, ...]
    simulations: int
    stopped: str
    descents: tuple[Descent, ...] = ()

    @property
    def cost_per_hour_usd(self) -> float:
        return fleet_cost(self.fleet)

    @property
    def budget_spent(self) -> bool:
        """Some descent was stopped by the budget rather than at a local optimum."""
        return any(d.stopped.startswith("budget") for d in self.descents)


def search_fleet(starts: Sequence[Start], kinds: Sequence[InstanceKind], judge: Judge, *,
                 limits: SearchLimits | None = None, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic) -> SearchResult | None:
    """Descend from each start, cheapest first (module docstring); None when no start meets the
    SLAs.  Ties keep the earlier start."""
    limits = limits or SearchLimits()
    started, sims_before = clock(), judge.simulations

    def spent() -> str:
        if judge.simulations - sims_before >= limits.max_simulations:
            return f"budget: {limits.max_simulations} simulations"
        if clock() - started >= limits.time_limit_s:
            return f"budget: {limits.time_limit_s:g} s"
        return ""

    best: SearchResult | None = None
    descents: list[Descent] = []
    ordered = sorted(enumerate(starts), key=lambda s: (fleet_cost(s[1].fleet), s[0]))
    for _i, start in ordered:
        ok, sim = judge.judge(start.fleet, start.settings)
        if not ok:
            descents.append(Descent(start.label, math.inf, math.inf, (), "misses the SLAs"))
            if progress:
                progress(f"    start {start.label} ({describe(start.fleet)}) misses the SLAs; skipped")
            continue
        fleet, taken, stopped = start.fleet, [], ""
        while not stopped:
            stopped = spent()
            if stopped:
                break
            for move in candidate_moves(fleet, kinds):
                candidate = move.apply(fleet)
                if not keeps_up(candidate, judge.mean_demand):
                    continue
                stopped = spent()
                if stopped:
                    break
                passed, result = judge.judge(candidate, start.settings)
                if progress:
                    progress(f"    {start.label}: {move.description} -> ${fleet_cost(candidate):.3f}/h: "
                             f"{'meets' if passed else 'misses'} the SLAs")
                if passed:
                    fleet, sim = candidate, result
                    taken.append(move.description)
                    break
            else:
                stopped = "local optimum"
        descents.append(Descent(start.label, fleet_cost(start.fleet), fleet_cost(fleet), tuple(taken), stopped))
        found = SearchResult(start.label, fleet, sim, start.settings, tuple(taken), 0, stopped)
        if best is None or found.cost_per_hour_usd < best.cost_per_hour_usd - COST_EPSILON_USD:
            best = found
    if best is None:
        return None
    return replace(best, simulations=judge.simulations - sims_before, descents=tuple(descents))
