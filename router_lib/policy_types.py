"""Values the routing policy reads and writes: settings, inputs, state and the decision.

``RoutingDecision.routes`` is exactly what the control server turns into Envoy weighted
clusters: for every :class:`RouteKey` ``(model, tier)`` a :class:`RouteWeights` (from
``router_lib.routes``, the one weights type from the policy to Envoy) holding one
:class:`PoolWeight` per pool that serves the model, integer weights >= 0 summing to
``settings.total_weight`` (never all zero: Envoy NACKs that), each with a typed :class:`Reason`.
A (model, tier) no pool serves is left out of ``routes`` and explained in ``unroutable``.

Keys are named tuples (:class:`RouteKey`, :class:`PoolModel`, :class:`RoutePool`): a reader sees
which field is which, and they still equal (and hash like) the plain tuples callers pass in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics
from router_lib.routes import PoolModel, PoolWeight, Reason, ReasonKind, RouteKey, RouteWeights

__all__ = [
    "NOT_NEEDED",
    "UNHEALTHY_NO_REPLICA",
    "PolicyInputs",
    "PolicySettings",
    "PolicyState",
    "PoolModel",
    "PoolWeight",
    "Reason",
    "ReasonKind",
    "RouteKey",
    "RoutePool",
    "RouteWeights",
    "RoutingDecision",
    "Smoothed",
]


class RoutePool(NamedTuple):
    """One pool on one route: the key of the feasibility the hysteresis remembers.
    ``(model, tier, pool)``."""

    model: str
    tier: str
    pool: str


# Reasons that never change: built once and shared by every decision (a decision holds ~300).
NOT_NEEDED = Reason(ReasonKind.NOT_NEEDED, "not needed: cheaper feasible pools cover the demand")
UNHEALTHY_NO_REPLICA = Reason(ReasonKind.NO_REPLICA, "unhealthy: 0 ready replicas")


@dataclass(frozen=True)
class PolicySettings:
    """Knobs of the policy; every one is explained where it is used (``router_lib.policy``).

    * ``headroom``: a tier is feasible on a pool when its predicted latency (at the tier's target
      compliance quantile) <= headroom * bound.
    * ``max_utilisation``: no pool is planned past this busy fraction, whatever the tier.
    * ``smoothing_tau_s``: time constant of the EWMAs: the queue depth (both ways) and the
      measured p99 (which rises at once and decays by EWMA).
    * ``demand_window_s``: demand per (model, tier) is the highest rate seen over this window
      (like Kubernetes' scale-down stabilisation window): a rise is acted on at once, a fall only
      once it has lasted the window, so noise around a level gives one stable estimate.
    * ``measured_hold_s``: a pool whose measured p99 or lag broke a bound loses its traffic, and
      with it every new measurement; its last measurement holds this long before it may be tried
      again (without the hold, a breaching pool was let back and dropped every few seconds).
    * ``hysteresis``: a feasible pool stays feasible up to (1 + h) x the threshold, an excluded
      one comes back only under (1 - h) x the threshold.
    * ``max_step``: most weight points any pool gains or loses in one decision (excluded pools
      drop to 0 at once regardless).  ``deadband``: moves smaller than this are not made.
    * ``max_error_rate``: a pool failing more than this fraction of a model's requests is unhealthy.
    * ``tier_isolation``: a looser tier tries pools that carry no stricter tier first (and spills
      its excess there).  Off, every tier takes the cheapest feasible pools, sharing them with
      stricter tiers; the strictest tier's safe utilisation still caps a shared pool, which is what
      the planner assumes (its tier-class groups carry looser tiers), so capacity and routing then
      agree on where looser tiers go.  A pool that shares its tiers through priority levels
      (``PoolSpec.share_tiers``) is never kept from a looser tier: there it waits behind gold.
    * ``use_observed_p99``: exclude a pool whose measured p99 (Envoy) is over the tier bound even if
      the prediction says it fits (the profile may be wrong; measurement wins).
    """

    total_weight: int = 100
    headroom: float = 0.8
    max_utilisation: float = 0.8
    smoothing_tau_s: float = 10.0
    demand_window_s: float = 30.0
    hysteresis: float = 0.1
    measured_hold_s: float = 20.0
    max_step: int = 25
    deadband: int = 2
    max_error_rate: float = 0.5
    use_observed_p99: bool = True
    tier_isolation: bool = True

    def __post_init__(self) -> None:
        if self.total_weight < 1:
            raise ValueError(f"total_weight must be >= 1, got {self.total_weight}")
        if not 0 < self.headroom <= 1 or not 0 < self.max_utilisation < 1:
            raise ValueError("headroom must be in (0, 1] and max_utilisation in (0, 1)")
        if self.max_step < 1 or self.deadband < 0 or not 0 <= self.hysteresis < 1:
            raise ValueError("max_step >= 1, deadband >= 0, hysteresis in [0, 1) required")


@dataclass(frozen=True)
class PolicyInputs:
    """One tick's inputs.

    ``pool_ready``: ready replicas per pool (a pool absent here: ``metrics.ready_replicas`` if
    known, else its configured replica count).  ``demand_per_s``: measured request rate per
    (model, tier) (a route absent from it has no demand); None when unknown: each model's observed
    rate is then split over the tiers by ``metrics.tier_rate_per_s`` (Envoy's per-tier virtual
    clusters), or evenly when that is empty.
    """

    fleet: Fleet
    metrics: FleetMetrics
    pool_ready: Mapping[str, int] = field(default_factory=dict)
    settings: PolicySettings = field(default_factory=PolicySettings)
    demand_per_s: Mapping[RouteKey, float] | None = None


@dataclass(frozen=True)
class RoutingDecision:
    """One decision: the weights of every routable route, and why the others have none."""

    routes: Mapping[RouteKey, RouteWeights]
    unroutable: Mapping[RouteKey, str] = field(default_factory=dict)
    time_s: float = 0.0

    def weights(self, model: str, tier: str) -> dict[str, int]:
        return self.routes[RouteKey(model, tier)].as_dict()

    def explain(self) -> list[str]:
        """Human-readable lines: one per route, then one per pool with its weight and reason."""
        lines: list[str] = []
        for (model, tier), route in sorted(self.routes.items()):
            lines.append(f"{model} / {tier}: " + ", ".join(f"{p.pool}={p.weight}" for p in route.pools))
            lines.extend(f"  {p.pool:<16} {p.weight:>4}  {p.reason}" for p in route.pools)
        for (model, tier), why in sorted(self.unroutable.items()):
            lines.append(f"{model} / {tier}: UNROUTABLE: {why}")
        return lines


class Smoothed(NamedTuple):
    """Smoothed signals of one :class:`PoolModel` (a NamedTuple: built 100 times a tick)."""

    queue_depth: float
    p99_ms: float | None
    lag_ms: float = 0.0  # emulated pools: mean ms per execution by which this host was slower than the profile
    seen_s: float = 0.0  # when p99 or lag was last measured (an idle pool keeps them for a hold-down)


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks; returned by ``decide`` and handed back next tick.

    ``capacity_for`` holds the (fleet, settings) the ``capacity`` table was built for; the table
    is rebuilt only when the next inputs carry a fleet or settings that differ in value (the same
    objects are recognised by identity first, so the usual check costs nothing).
    """

    time_s: float
    smoothed: Mapping[PoolModel, Smoothed]
    demand_per_s: Mapping[RouteKey, float]
    demand_history: Mapping[RouteKey, tuple[tuple[float, float], ...]]  # (time_s, req/s), decreasing
    weights: Mapping[RouteKey, Mapping[str, int]]  # route -> pool -> weight
    feasible: frozenset[RoutePool]  # pools that met their route's bound when last assessed
    capacity: object = None
    capacity_for: tuple[object, object] = (None, None)
