"""``/status`` as JSON, rendered from the loop's last ``LoopView`` (pure: reading it never waits
for a scrape or a push)."""

from __future__ import annotations

from typing import Any

from control.loop import LoopView
from control.release_admin import releases_view
from router_lib.calibration import calibration_view
from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics


def _metric_view(metrics: FleetMetrics | None, pool: str, model: str) -> dict[str, Any]:
    m = metrics.by_pool_model.get((pool, model)) if metrics else None
    if m is None:
        return {}
    return {
        "queue_depth": m.queue_depth,
        "request_rate_per_s": round(m.request_rate_per_s, 2),
        "p95_ms": m.p95_ms,
        "p99_ms": m.p99_ms,
        "error_rate": m.error_rate,
        "ready": m.ready,
        "emulation_lag_ms": m.emulation_lag_ms,
    }


def render_status(fleet: Fleet, view: LoopView, ads_streams: Any) -> dict[str, Any]:
    plans = view.decision.capacity.pools if view.decision else {}
    pools = []
    for p in fleet.pools:
        plan = plans.get(p.name)
        ready = len(view.replicas.serving(p.name))
        pools.append({
            "name": p.name,
            "accelerator": p.accelerator.value,
            "instance_type": p.instance_type,
            "mode": p.mode.value,
            "emulated": p.emulated,
            "price_per_hour_usd": p.price_per_hour_usd,
            "models": list(p.models),
            "ready_replicas": 0 if p.name in view.drains else ready,
            "draining": p.name in view.drains,
            "desired_replicas": plan.desired_replicas if plan else p.replicas,
            "capacity_kind": plan.kind.value if plan else None,
            "capacity_reason": plan.reason if plan else None,
            "starting_replicas": plan.starting_replicas if plan else 0,
            "replicas": [dict(r.detail) or {"host": r.host, "http_port": r.http_port, "grpc_port": r.grpc_port,
                                            "ready": r.ready, "terminating": r.terminating}
                         for r in view.replicas.by_pool.get(p.name, ())],
            "metrics": {m: _metric_view(view.metrics, p.name, m) for m in p.models} if view.metrics else {},
        })
    demand = view.decision.demand_per_s if view.decision else {}
    routes = [
        {"model": k.model, "tier": k.tier, "weights": r.as_dict(),
         "demand_per_s": round(demand[k], 3) if k in demand else None,  # the policy's estimate (batch/ reads it)
         "reasons": {pw.pool: str(pw.reason) for pw in r.pools},
         "reason_kinds": {pw.pool: pw.reason.kind.value for pw in r.pools}}
        for k, r in sorted(view.routes.items())
    ]
    unroutable = view.decision.unroutable if view.decision else {}
    actuation = view.actuation
    ledger = view.ledger
    cost = None
    if ledger is not None:
        cost = {
            "fleet_per_hour_usd": round(ledger.fleet_per_hour_usd, 6),
            "spent_usd": round(ledger.total_usd, 6),
            "ledger_seconds": round(ledger.last_s - ledger.started_s, 3),
            "by_pool": {p: {"per_hour_usd": round(ledger.per_hour_usd.get(p, 0.0), 6), "spent_usd": round(usd, 6)}
                        for p, usd in sorted(ledger.usd_by_pool.items())},
            "attributed_usd": {r: round(usd, 6) for r, usd in sorted(ledger.attributed_usd().items())},
        }
    capacity = view.decision.capacity if view.decision else None
    return {
        "capacity": ({"shed": [str(k) for k in capacity.shed], "notes": list(capacity.notes),
                      "planned_cost_per_hour_usd": round(capacity.planned_cost_per_hour_usd, 6),
                      "desired_cost_per_hour_usd": round(capacity.desired_cost_per_hour_usd, 6)}
                     if capacity else None),
        "cost": cost,
        "pools": pools,
        "routes": routes,
        "unroutable": {str(k): why for k, why in sorted(unroutable.items())},
        "snapshot_version": view.snapshot_version,
        "last_push_unix_s": view.last_push_unix_s,
        "ads_streams": ads_streams,
        "last_error": view.last_error,
        "resumed": dict(view.resumed) if view.resumed is not None else None,
        "metrics_errors": dict(view.metrics_errors),
        "state_record_version": view.record_version,
        "releases": releases_view(view.releases),
        # the online calibration per model and pool: prior vs learned service time, samples, confidence
        "calibration": [calibration_view(c, fleet.time_dilation, any(fleet.pool(p).emulated for p in c.pools))
                        for c in view.decision.calibration] if view.decision else [],
        "actuation": ({"requested": dict(actuation.requested), "applied": dict(actuation.applied),
                       "note": actuation.note} if actuation else None),
    }
