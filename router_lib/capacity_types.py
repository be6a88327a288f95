"""Values the capacity decider reads and writes: settings, inputs and the decision.

The decider itself is :func:`router_lib.capacity.decide_capacity`; its state lives in
:mod:`router_lib.capacity_state`.  Everything here is frozen and validated when built, so the
decider trusts it.  Units are in the names (``*_s`` seconds, ``*_per_s`` per second, ``*_usd``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics
from router_lib.policy_types import PolicySettings
from router_lib.routes import RouteKey


class CapacityReason(enum.StrEnum):
    """What settled a pool's desired replicas this tick (what code and alerts may branch on)."""

    HOLD = "hold"  # nothing asks for a change
    PLAN_UP = "plan_up"  # the planner's target for the demand rose
    PLAN_DOWN = "plan_down"  # the planner's target fell and has stayed down for the window
    QUEUE_UP = "queue_up"  # requests queue up on the ready replicas
    LATENCY_UP = "latency_up"  # measured p95/p99 is near the strictest carried tier's bound
    UTILISATION_UP = "utilisation_up"  # measured load is past the planner's safe utilisation
    TO_ZERO = "to_zero"  # the plan serves this pool's traffic elsewhere: emptied
    FROM_ZERO = "from_zero"  # an empty pool is planned again
    TIER_FLOOR = "tier_floor"  # kept at 1: the last pool that meets some (model, tier)
    MIN = "min"  # held up by min_replicas
    MAX = "max"  # held down by max_replicas
    MACHINE_LIMIT = "machine_limit"  # trimmed to fit Fleet.max_local_replicas
    BUDGET = "budget"  # trimmed, or looser tiers shed, to fit Fleet.budget_per_hour_usd
    STABILISING = "stabilising"  # a fall held by the scale-down window or the flap guard
    DRAINED = "drained"  # an operator drains it: desired unchanged, no traffic
    COLD_START_WAIT = "cold_start_wait"  # replicas are starting: no more for the same need
    PLAN_INFEASIBLE = "plan_infeasible"  # no plan meets the demand: current counts kept


@dataclass(frozen=True)
class CapacitySettings:
    """Knobs of the capacity decider; each default is chosen for the reason given.

    * ``headroom`` (1.2): plan for this multiple of the routing policy's demand (already the peak
      over its window).  It must exceed ``1 + replan_tolerance`` for a cached plan to still cover
      a rise the tolerance lets through: 1.2 against 0.1 leaves 10% to spare.
    * ``scale_down_window_s`` (300): desired never falls below the highest raw target of this
      window (Kubernetes' default scale-down stabilisation): a replica costs a cold start to get
      back, so a dip must last five minutes before capacity follows it.
    * ``queue_per_replica_up`` (8): Triton's pending requests per ready replica past which the
      pool is short now.  A replica that keeps up holds about one forming batch per instance in its
      queue; 8 is above that for the batch sizes the profiles use at the rates they serve, and
      low enough to act before a tier's bound is broken.  Scale-up asks for
      ``ceil(queue / queue_per_replica_up)`` replicas (like the HPA's proportional rule).
    * ``latency_up_fraction`` (0.9): scale up when the measured p95 or p99 passes this fraction
      of the strictest carried tier's bound: above the policy's planning headroom (0.8), so a
      pool run as planned does not fire it, and below 1, so capacity arrives before routing
      excludes the pool for breaking the bound.
    * ``max_step_up`` (4) and ``max_step_up_fraction`` (1.0): at most
      ``max(max_step_up, ceil(max_step_up_fraction * current))`` replicas added per pool per tick
      (Kubernetes' default scale-up policy: 4 pods or 100%, whichever is more), so one bad
      sample cannot start a fleet.
    * ``flap_guard_s`` (60): no reversal of a pool's direction within this time of its last
      change (a reversal wastes a cold start).  A shortfall measured on the pool (queue, latency
      or utilisation) may still reverse a recent scale-down: the SLA outranks the saving; a rise
      of the demand estimate alone waits.
    * ``replan_tolerance`` (0.1): re-run the MILP planner only when some route's demand moved by
      more than this fraction of what the cached plan was made for (or the usable pools changed);
      the planner costs milliseconds to tens of ms, the decider runs every tick.
    * ``start_penalty`` (0.5): a re-plan charges each replica it would start beyond those running
      this fraction of the replica's hourly price (``router_lib.planner``'s re-planning term).
      Mixes within a few percent of each other are common (measured: 3 Inferentia + 1 CPU at
      $2.42/h against 2 + 5 at $2.24/h); a started replica is billed for its cold start and then
      held by the scale-down window, so a swap pays only if its saving lasts.  0.5 prices a start
      at half a replica-hour, the cost of a swap that lasts twice (cold start + window) when those
      are 7 minutes (2 min cold start, 5 min window): a swap that starts 4 CPUs to drop one
      Inferentia for $0.18/h is refused, one that starts 3 CPUs for $0.32/h goes ahead.  The
      penalty only ranks mixes: a rise that needs new replicas still gets them.
    * ``arrival_grace_s`` (300): how long after asking for a pool's replicas the decider still
      counts them as arriving when none is reported starting yet (other pools wait for arriving
      ones before shrinking).  A cloud node's cold start (node, image pull, model load) is a few
      minutes; past this a pool that never started is not waited for.
    * ``policy``: the routing policy's settings.  The planner and the utilisation signal use its
      ``headroom`` on tier bounds and ``max_utilisation``, so capacity and routing agree on what
      "fits" (pass the loop's own ``PolicySettings``).
    """

    headroom: float = 1.2
    scale_down_window_s: float = 300.0
    queue_per_replica_up: float = 8.0
    latency_up_fraction: float = 0.9
    max_step_up: int = 4
    max_step_up_fraction: float = 1.0
    flap_guard_s: float = 60.0
    replan_tolerance: float = 0.1
    start_penalty: float = 0.5
    arrival_grace_s: float = 300.0
    policy: PolicySettings = field(default_factory=PolicySettings)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "policy" and (isinstance(value, bool) or not isinstance(value, int | float)
                                       or not math.isfinite(value)):
                raise ValueError(f"CapacitySettings.{f.name} must be a finite number, got {value!r}")
        rules = (
            ("headroom", self.headroom >= 1.0, ">= 1 (plan for at least the recent peak)"),
            ("scale_down_window_s", self.scale_down_window_s >= 0, ">= 0"),
            ("queue_per_replica_up", self.queue_per_replica_up > 0, "> 0"),
            ("latency_up_fraction", 0 < self.latency_up_fraction <= 1, "in (0, 1]"),
            ("max_step_up", isinstance(self.max_step_up, int) and self.max_step_up >= 1, "an int >= 1"),
            ("max_step_up_fraction", self.max_step_up_fraction >= 0, ">= 0"),
            ("flap_guard_s", self.flap_guard_s >= 0, ">= 0"),
            ("replan_tolerance", 0 <= self.replan_tolerance < 1, "in [0, 1)"),
            ("start_penalty", self.start_penalty >= 0, ">= 0"),
            ("arrival_grace_s", self.arrival_grace_s >= 0, ">= 0"),
        )
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"CapacitySettings.{name} must be {rule}, got {getattr(self, name)!r}")
        if not isinstance(self.policy, PolicySettings):
            raise ValueError(f"CapacitySettings.policy must be a PolicySettings, got {self.policy!r}")


@dataclass(frozen=True, kw_only=True)
class CapacityInputs:
    """One tick's inputs (keyword-only: ``ready`` and ``starting`` have the same type).

    * ``ready``: replicas per pool that serve traffic now (absent: 0).
    * ``starting``: replicas started but not yet ready (absent: 0); they count toward the target.
    * ``demand_per_s``: recent demand per route as the routing policy estimates it (the peak over
      its window), req/s.  Routes with an unknown tier are ignored and said so.
    * ``carried_tiers``: the tiers each pool carries traffic for now; live latency and
      utilisation are judged against the strictest of them (none: best effort).
    * ``drains``: pools an operator drains.
    """

    fleet: Fleet
    metrics: FleetMetrics
    ready: Mapping[str, int]
    demand_per_s: Mapping[RouteKey, float]
    starting: Mapping[str, int] = field(default_factory=dict)
    carried_tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    drains: frozenset[str] = frozenset()
    settings: CapacitySettings = field(default_factory=CapacitySettings)


@dataclass(frozen=True)
class PoolCapacity:
    """The decider's word on one pool this tick.

    ``draining``: the pool is being emptied (desired 0, or an operator drain): routing must move
    its traffic off this tick, before its replicas stop.  ``reason`` is a sentence with the numbers.
    """

    pool: str
    desired_replicas: int
    ready_replicas: int
    draining: bool
    kind: CapacityReason
    reason: str
    starting_replicas: int = 0

    @property
    def routable(self) -> bool:
        """May get new requests: has a ready replica and is not being drained."""
        return self.ready_replicas > 0 and not self.draining


@dataclass(frozen=True)
class CapacityDecision:
    """Every pool's desired replicas, the routes the budget could not afford, and the costs.

    ``shed``: routes whose demand was left out of the plan to fit the budget, loosest tier first
    (the strictest tier is never shed).  ``planned_cost_per_hour_usd``: the plan's replicas (within
    bounds) at the pools' prices, drained pools included; ``desired_cost_per_hour_usd``: the
    desired replicas at the same prices.  ``notes``: fleet-wide sentences (the plan, shedding, a
    budget or machine limit that cannot be met).
    """

    pools: Mapping[str, PoolCapacity]
    shed: tuple[RouteKey, ...] = ()
    planned_cost_per_hour_usd: float = 0.0
    desired_cost_per_hour_usd: float = 0.0
    notes: tuple[str, ...] = ()

    def desired(self) -> dict[str, int]:
        return {name: p.desired_replicas for name, p in self.pools.items()}

    def routable_ready(self) -> dict[str, int]:
        """Ready replicas as routing must see them: 0 for a pool being drained."""
        return {name: (p.ready_replicas if p.routable else 0) for name, p in self.pools.items()}

    def explain(self) -> list[str]:
        """Human-readable lines: the fleet notes, then one line per pool."""
        lines = list(self.notes)
        lines.extend(f"{p.pool:<16} {p.desired_replicas:>3}  {p.kind.value:<16} {p.reason}"
                     for p in self.pools.values())
        return lines
