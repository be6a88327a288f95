"""The control server's own Prometheus metrics, exported after every tick (a ``TickObserver``).

Names, labels and help come from ``router_lib.metric_names.CONTROL_PLANE`` (one list, read by the
dashboards, alert rules and autoscaling manifests too).  Cost per request is the routing
policy's own figure: the price of a replica over what it serves at the tier's safe utilisation
(``router_lib.latency_model``).  It depends only on prices and the latency model, so it is computed
at start from the offline profiles and again whenever the online calibration changes the profiles
the deciders use (the same ``calibrated_fleet`` the tick hands them: one latency model).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from control.decide import DeciderStates
from control.loop import LoopView, TickObserver
from router_lib.calibration import CalibrationSettings, calibrated_fleet
from router_lib.domain import Fleet
from router_lib.metric_names import CONTROL_PLANE
from router_lib.policy_stages import build_capacity_table
from router_lib.policy_types import PolicySettings
from router_lib.routes import RouteKey

TICK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def cost_per_1k_requests_usd(fleet: Fleet, settings: PolicySettings) -> dict[tuple[str, str, str], float]:
    """(pool, model, tier) -> $ per 1000 requests at the tier's safe utilisation (inf: never fits):
    the policy's own figure, read from the table it ranks pools by."""
    table = build_capacity_table(fleet, settings)
    # the table's throughputs are per wall second; in a fleet dilated k times a platform second
    # is k wall seconds, so a request costs k times less than the table says
    return {(e.name, model, tier): usd / 1000.0 / fleet.time_dilation
            for model, entries in table.serving.items() for e in entries for tier, usd in e.cost_per_million.items()}


class ControlPlaneMetrics(TickObserver):
    def __init__(self, registry: CollectorRegistry, fleet: Fleet, settings: PolicySettings,
                 calibration: CalibrationSettings | None = None) -> None:
        def make(cls: Any, name: str, **kw: Any) -> Any:
            _type, labels, help_text = CONTROL_PLANE[name]
            return cls(name.removesuffix("_total"), help_text, list(labels), registry=registry, **kw)

        self.weight = make(Gauge, "router_route_weight")
        self.decisions = make(Counter, "router_decisions_total")
        self.healthy = make(Gauge, "router_pool_healthy")
        self.queue = make(Gauge, "router_pool_queue_depth")
        self.p99 = make(Gauge, "router_pool_p99_ms")
        self.p95 = make(Gauge, "router_pool_p95_ms")
        self.cost = make(Gauge, "router_cost_per_1k_requests_usd")
        self.fleet_cost = make(Gauge, "router_fleet_cost_per_hour_usd")
        self.tick = make(Histogram, "control_loop_tick_seconds", buckets=TICK_BUCKETS_S)
        self.spent = make(Gauge, "router_fleet_spent_usd")
        self.route_spent = make(Gauge, "router_route_spent_usd")
        self.desired = make(Gauge, "router_pool_desired_replicas")
        self.ready = make(Gauge, "router_pool_ready_replicas")
        self._policy = settings
        self._calibration = calibration or CalibrationSettings()
        self._priced_profiles = fleet.profiles
        self._set_costs(fleet)
        for pool in fleet.pools:  # nothing is ready until the first tick says so
            self.fleet_cost.labels(pool.name, pool.accelerator.value, str(pool.emulated).lower()).set(0.0)

    def _set_costs(self, fleet: Fleet) -> None:
        for (pool, model, tier), usd in cost_per_1k_requests_usd(fleet, self._policy).items():
            self.cost.labels(pool, model, tier).set(usd)

    def _follow_calibration(self, fleet: Fleet, states: DeciderStates) -> None:
        calibrated = calibrated_fleet(fleet, states.calibration, self._calibration)
        if calibrated.profiles != self._priced_profiles:
            self._priced_profiles = calibrated.profiles
            self._set_costs(calibrated)

    def route_changed(self, key: RouteKey) -> None:
        self.decisions.labels(key.model, key.tier).inc()

    def tick_seconds(self, seconds: float) -> None:
        self.tick.observe(seconds)

    def observed(self, fleet: Fleet, view: LoopView, states: DeciderStates) -> None:
        self._follow_calibration(fleet, states)
        for key, route in view.routes.items():
            for p in route.pools:
                self.weight.labels(key.model, key.tier, p.pool).set(p.weight)
        plans = view.decision.capacity.pools if view.decision else {}
        ledger = view.ledger
        if ledger is not None:
            for name, usd in ledger.usd_by_pool.items():
                self.spent.labels(name).set(usd)
            for route, usd in ledger.attributed_usd().items():
                if "/" in route:
                    self.route_spent.labels(*route.split("/", 1)).set(usd)
        for pool in fleet.pools:
            labels = (pool.name, pool.accelerator.value, str(pool.emulated).lower())
            plan = plans.get(pool.name)
            ready = plan.ready_replicas if plan else 0
            self.healthy.labels(*labels).set(1 if plan is not None and plan.routable else 0)
            self.ready.labels(*labels).set(ready)
            if plan is not None:
                self.desired.labels(*labels).set(plan.desired_replicas)
            per_hour = ledger.per_hour_usd.get(pool.name) if ledger is not None else None
            self.fleet_cost.labels(*labels).set(pool.price_per_hour_usd * ready if per_hour is None else per_hour)
            if view.metrics is None:
                continue
            for model in pool.models:
                m = view.metrics.by_pool_model.get((pool.name, model))
                if m is None:
                    continue
                self.queue.labels(pool.name, model).set(m.queue_depth)
                if m.p99_ms is not None:
                    self.p99.labels(pool.name, model).set(m.p99_ms)
                if m.p95_ms is not None:
                    self.p95.labels(pool.name, model).set(m.p95_ms)
