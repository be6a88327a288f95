"""The platform's Grafana dashboards as plain data: titles, panels and their PromQL.

Kept apart from the grafana-foundation-sdk code (build.py) so that the metric-name check and the
PNG renderer read the same queries Grafana runs without importing the SDK. Every query uses only
names from router_lib/metric_names.py or recording rules from alerts/rules.yaml
(tests/deploy/test_dashboards.py). Variables: `$pool`, `$model`, `$tier` (regex, `.*` = all) and
Grafana's `$__rate_interval`; the renderer substitutes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from router_lib.config import load_tiers

REPO = Path(__file__).resolve().parent.parent
TIERS = load_tiers(REPO / "data" / "tiers.yaml")
# The tier bounds drawn as threshold lines on the latency panels.
TIER_BOUNDS_MS = {t.name: t.p99_ms for t in TIERS.tiers.values() if t.p99_ms is not None}

R = "$__rate_interval"
POOL = 'pool=~"$pool"'
MODEL = 'model=~"$model"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    # Horizontal lines (value -> label) drawn on the panel, e.g. the tiers' p99 bounds.
    thresholds: dict[float, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


SLA_LINES = {bound: f"{name} p99 bound" for name, bound in TIER_BOUNDS_MS.items()}

COST = Dashboard("inference-cost", "Inference cost per model, tier and pool",
                 "What the fleet costs and what a request costs, per pool, model and SLA tier.", (
    Panel("Fleet cost ($/hour)", (q(f"sum(router_fleet_cost_per_hour_usd{{{POOL}}})", "total"),),
          unit="currencyUSD", kind="stat"),
    Panel("Cost per pool ($/hour)",
          (q(f"sum by (pool, accelerator, emulated) (router_fleet_cost_per_hour_usd{{{POOL}}})",
             "{{pool}} ({{accelerator}}, emulated={{emulated}})"),), unit="currencyUSD"),
    Panel("Cost per 1000 requests by pool and model ($)",
          (q(f"router_cost_per_1k_requests_usd{{{POOL}, {MODEL}}}", "{{pool}} / {{model}} / {{tier}}"),),
          unit="currencyUSD"),
    Panel("Cost per 1000 requests by tier, traffic-weighted ($)",
          (q(f"sum by (tier) (router_cost_per_1k_requests_usd{{{MODEL}}} * on (model, tier, pool) "
             f"router_route_weight) / sum by (tier) (router_route_weight{{{MODEL}}})", "{{tier}}"),),
          unit="currencyUSD",
          description="Each pool's $/1k weighted by the share of the tier's traffic routed to it."),
    Panel("Requests served per pool (req/s)",
          (q(f"sum by (pool) (rate(nv_inference_request_success{{{POOL}, {MODEL}}}[{R}]))", "{{pool}}"),),
          unit="reqps",
          description="Triton counts every model it runs: an ensemble request counts once per step. "
                      "Pick a top-level model in $model for client requests."),
))

LATENCY = Dashboard("inference-latency-sla", "Latency vs SLA per tier",
                    "p99 as clients see it at Envoy, against each tier's bound, and the error budgets.", (
    Panel("p99 latency per tier (Envoy)",
          (q("histogram_quantile(0.99, sum by (le, envoy_virtual_cluster) "
             f"(rate(envoy_vhost_vcluster_upstream_rq_time_bucket[{R}])))", "{{envoy_virtual_cluster}}"),),
          unit="ms", thresholds=SLA_LINES),
    Panel("Requests slower than the tier bound (5m)",
          (q("tier:sla_latency_slow:ratio_rate5m", "{{tier}} 5m"),
           q("tier:sla_latency_slow:ratio_rate1h", "{{tier}} 1h")), unit="percentunit",
          thresholds={0.01: "budget (1 %)"}),
    Panel("Latency budget burn rate (1h)",
          (q("tier:sla_latency_slow:ratio_rate1h / 0.01", "{{tier}}"),), unit="short",
          thresholds={14.4: "page (fast)", 6.0: "page (slow)"}),
    Panel("5xx ratio per tier (5m)", (q("tier:sla_errors:ratio_rate5m", "{{tier}}"),), unit="percentunit"),
    Panel("p99 per pool and model (control server's window)",
          (q(f"router_pool_p99_ms{{{POOL}, {MODEL}}}", "{{pool}} / {{model}}"),), unit="ms", thresholds=SLA_LINES),
    Panel("p95 per pool and model (autoscaling input)",
          (q(f"router_pool_p95_ms{{{POOL}, {MODEL}}}", "{{pool}} / {{model}}"),), unit="ms"),
))

TRAFFIC = Dashboard("inference-traffic", "Traffic split and weight changes",
                    "Where each tier's requests go and when the control server moved them.", (
    Panel("Route weight per model, tier and pool",
          (q(f"router_route_weight{{{POOL}, {MODEL}, tier=~\"$tier\"}}", "{{model}} / {{tier}} -> {{pool}}"),),
          unit="percent"),
    Panel("Weight changes (decisions per 5m)",
          (q(f"sum by (model, tier) (increase(router_decisions_total{{{MODEL}, tier=~\"$tier\"}}[5m]))",
             "{{model}} / {{tier}}"),)),
    Panel("Requests per tier at Envoy (req/s)",
          (q(f"sum by (envoy_virtual_cluster) (rate(envoy_vhost_vcluster_upstream_rq_total[{R}]))",
             "{{envoy_virtual_cluster}}"),), unit="reqps"),
    Panel("Requests per Envoy cluster (req/s)",
          (q(f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total[{R}]))", "{{envoy_cluster_name}}"),),
          unit="reqps"),
    Panel("Active upstream requests per Envoy cluster",
          (q("sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_active)", "{{envoy_cluster_name}}"),)),
))

POOLS = Dashboard("inference-pools", "Pool utilisation and queue depth",
                  "Per pool: queue, busy time, batching, failures, and whether emulation keeps up.", (
    Panel("Queue depth (Triton pending requests)",
          (q(f"sum by (pool, model) (nv_inference_pending_request_count{{{POOL}, {MODEL}}})", "{{pool}} / {{model}}"),)),
    Panel("Compute busy (instance-seconds per second)",
          (q(f"sum by (pool) (rate(nv_inference_compute_infer_duration_us{{{POOL}}}[{R}]) / "
             f"rate(nv_inference_request_success{{{POOL}}}[{R}]) * rate(nv_inference_exec_count{{{POOL}}}[{R}])) / 1e6",
             "{{pool}}"),),
          description="1.0 = one model instance computing all the time. Triton adds an execution's time to the "
                      "duration counter once per request it carried, so the mean time per request is scaled by "
                      "executions, not requests."),
    Panel("Mean queue time (ms)",
          (q(f"sum by (pool) (rate(nv_inference_queue_duration_us{{{POOL}}}[{R}])) / 1e3 / "
             f"sum by (pool) (rate(nv_inference_request_success{{{POOL}}}[{R}]))", "{{pool}}"),), unit="ms"),
    Panel("Mean batch size",
          (q(f"sum by (pool, model) (rate(nv_inference_count{{{POOL}}}[{R}])) / "
             f"sum by (pool, model) (rate(nv_inference_exec_count{{{POOL}}}[{R}]))", "{{pool}} / {{model}}"),)),
    # REJECTED (a queue policy turned the request away before it ran: a shed, or a batcher wake-up
    # at 50/s per shared model, fleet/batcher_wake.py) is not a failed request: its own panel.
    Panel("Failed requests (req/s)",
          (q(f'sum by (pool, reason) (rate(nv_inference_request_failure{{{POOL},reason!="REJECTED"}}[{R}]))',
             "{{pool}} {{reason}}"),),
          unit="reqps"),
    Panel("Rejected in the queue: sheds and batcher wake-ups (req/s)",
          (q(f'sum by (pool, model) (rate(nv_inference_request_failure{{{POOL},reason="REJECTED"}}[{R}]))',
             "{{pool}} / {{model}}"),),
          unit="reqps"),
    Panel("Healthy pools", (q(f"router_pool_healthy{{{POOL}}}", "{{pool}} ({{accelerator}})"),), kind="stat"),
    Panel("Emulation lag (share of profile time)",
          (q("pool_model:emulation_lag:ratio_rate10m", "{{pool}} / {{model}}"),), unit="percentunit",
          thresholds={0.1: "alert"}),
))

CONTROL_PLANE = Dashboard("inference-control-plane", "Control plane health",
                          "The xDS control server: pushes, ACK/NACK, convergence and its loop.", (
    Panel("Pushes per type (per second)",
          (q(f"sum by (type_url) (rate(xds_pushes_total[{R}]))", "{{type_url}}"),)),
    Panel("NACKs (per 5m)", (q("sum by (type_url) (increase(xds_nacks_total[5m]))", "{{type_url}}"),)),
    Panel("Push to ACK (s)",
          (q(f"histogram_quantile(0.5, sum by (le) (rate(xds_push_to_ack_seconds_bucket[{R}])))", "p50"),
           q(f"histogram_quantile(0.99, sum by (le) (rate(xds_push_to_ack_seconds_bucket[{R}])))", "p99")),
          unit="s"),
    Panel("Connected ADS streams", (q("sum(xds_connected_streams)", "streams"),), kind="stat"),
    Panel("Seconds since last push", (q("time() - max(xds_last_push_timestamp_seconds)", "age"),), unit="s",
          kind="stat"),
    Panel("Control loop tick (s)",
          (q(f"histogram_quantile(0.99, sum by (le) (rate(control_loop_tick_seconds_bucket[{R}])))", "p99"),
           q(f"rate(control_loop_tick_seconds_count[{R}])", "ticks/s")), unit="s"),
    Panel("Snapshot version in force", (q("xds_snapshot_version_info == 1", "{{version}}"),), kind="stat"),
))

BATCH = Dashboard("inference-batch-jobs", "Batch jobs (bronze tier)",
                  "Asynchronous jobs on spare capacity: progress, throughput against the spare capacity the "
                  "control plane reports, back-pressure, and what each job has cost.", (
    Panel("Rows answered per second, by pool",
          (q(f"sum by (pool) (rate(batch_rows_answered_total{{{MODEL}, outcome=\"ok\"}}[{R}]))", "{{pool}}"),
           q(f"sum(batch_spare_capacity_rows_per_second{{{MODEL}}} >= 0)", "spare capacity (control plane)")),
          unit="short", description="Throughput of the workers next to the spare capacity they were told."),
    Panel("Rows waiting (queue depth, what KEDA scales workers on)",
          (q("sum by (job) (batch_queue_depth_rows)", "{{job}}"),)),
    Panel("Job progress (rows written / total)",
          (q(f"sum by (job) (batch_job_rows{{{MODEL}, state=\"written\"}}) / "
             f"sum by (job) (batch_job_rows{{{MODEL}, state=\"total\"}})", "{{job}}"),), unit="percentunit"),
    Panel("Cost so far per job ($)",
          (q(f"sum by (job) (batch_job_cost_usd{{{MODEL}}})", "{{job}}"),), unit="currencyUSD",
          description="Pool time the job used x the pool's price."),
    Panel("Back-pressure: paused workers and in-flight limit",
          (q(f"sum by (model) (batch_paused{{{MODEL}}})", "paused {{model}}"),
           q(f"sum by (model) (batch_in_flight_limit{{{MODEL}}})", "in-flight limit {{model}}")),
          description="Workers pause while gold and silver need the pools."),
    Panel("Batch requests by outcome (req/s)",
          (q(f"sum by (outcome) (rate(batch_requests_total{{{MODEL}}}[{R}]))", "{{outcome}}"),), unit="reqps",
          description="Rejections and per-try timeouts are back-pressure: the workers slow down and retry."),
))

DASHBOARDS: dict[str, Dashboard] = {
    "cost": COST,
    "latency_sla": LATENCY,
    "traffic": TRAFFIC,
    "pools": POOLS,
    "control_plane": CONTROL_PLANE,
    "batch": BATCH,
}
