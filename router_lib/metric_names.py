"""The one list of metric names this platform exports (beyond Triton's and Envoy's own).

Dashboards, alert rules, autoscaling manifests and tests import or read these names from here so
that nothing drifts.  Each entry: name -> (type, labels, help).
"""

from __future__ import annotations

# Control server (xds_server, admin port /metrics).
CONTROL_PLANE: dict[str, tuple[str, tuple[str, ...], str]] = {
    "router_route_weight": ("gauge", ("model", "tier", "pool"), "Current routing weight (0-100) per model, tier and pool."),
    "router_decisions_total": ("counter", ("model", "tier"), "Policy decisions that changed a route's weights."),
    "router_pool_healthy": ("gauge", ("pool", "accelerator", "emulated"), "1 when the pool has a ready replica."),
    "router_pool_queue_depth": ("gauge", ("pool", "model"), "Pending requests in Triton, summed over replicas."),
    "router_pool_p99_ms": ("gauge", ("pool", "model"), "p99 latency in ms as Envoy saw it over the window."),
    # Added for autoscaling (k8s KEDA ScaledObjects scale each pool on queue depth and p95).
    "router_pool_p95_ms": ("gauge", ("pool", "model"), "p95 latency in ms as Envoy saw it over the window."),
    "router_cost_per_1k_requests_usd": ("gauge", ("pool", "model", "tier"), "$ per 1000 requests at the tier's safe utilisation (the routing policy's own cost)."),
    "router_fleet_cost_per_hour_usd": ("gauge", ("pool", "accelerator", "emulated"), "$/hour of the pool's ready replicas (price x ready replicas)."),
    "xds_pushes_total": ("counter", ("type_url",), "Resources pushed to Envoy/gRPC clients."),
    "xds_nacks_total": ("counter", ("type_url",), "NACKs received (Envoy rejected a config)."),
    "xds_push_to_ack_seconds": ("histogram", (), "Time from a push to its ACK."),
    "xds_connected_streams": ("gauge", (), "Open ADS streams."),
    "xds_snapshot_version_info": ("gauge", ("version",), "1 for the version in force."),
    "xds_last_push_timestamp_seconds": ("gauge", (), "Unix time of the last push."),
    "control_loop_tick_seconds": ("histogram", (), "Duration of one read-decide-push tick."),
}

# Emulated Triton pools (custom metrics of the emulation backend, on Triton's /metrics).
EMULATION: dict[str, tuple[str, tuple[str, ...], str]] = {
    "emulation_executions_total": ("counter", ("model", "pool", "accelerator", "emulated"), "Batches executed by an emulated pool."),
    "emulation_profile_ms_total": ("counter", ("model", "pool", "accelerator", "emulated"), "Sum of profile service times (ms)."),
    "emulation_lag_ms_total": ("counter", ("model", "pool", "accelerator", "emulated"), "Sum of ms by which this machine's real compute exceeded the profile."),
    "emulation_lagged_executions_total": ("counter", ("model", "pool", "accelerator", "emulated"), "Batches whose compute exceeded the profile."),
}

# Triton's own metrics that the platform reads.
TRITON_READ = (
    "nv_inference_pending_request_count",
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)

# Envoy's metrics that the platform reads (Prometheus names from /stats/prometheus).
ENVOY_READ = (
    "envoy_cluster_upstream_rq_time",
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq_xx",
    "envoy_cluster_upstream_rq_active",
    # Per-tier request stats: Envoy virtual clusters named after the tiers (see
    # ENVOY_TIER_VIRTUAL_CLUSTERS); the SLA burn-rate alerts and the latency-vs-SLA dashboard read them.
    "envoy_vhost_vcluster_upstream_rq_time",
    "envoy_vhost_vcluster_upstream_rq_total",
    "envoy_vhost_vcluster_upstream_rq_xx",
)

# Buckets (ms) of Envoy's upstream_rq_time histograms (bootstrap stats_config.histogram_bucket_settings).
# Every tier's p99 bound (data/tiers.yaml) must be a bucket edge, or "requests within the bound"
# cannot be counted exactly; Envoy's default buckets lack 150.
ENVOY_RQ_TIME_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000, 10000)

# Virtual cluster names on the route configuration's virtual host, one per tier, matched on the
# x-sla-tier header; the default tier's virtual cluster also matches requests without the header.
# They appear as the envoy_virtual_cluster label of the envoy_vhost_vcluster_* metrics.
ENVOY_TIER_VIRTUAL_CLUSTERS = ("gold", "silver", "bronze")


# What the control loop asks Envoy's admin for: only the stats it reads (Envoy matches this RE2
# regex against its own stat names, before the Prometheus renaming).  The full page holds tens of
# thousands of samples; parsing it every tick cost a fifth of a core here.
ENVOY_STATS_FILTER = r"(upstream_rq_(time|total|active|[0-9]xx)$)|(\.vcluster\.)"


def envoy_stats_url(admin_base_url: str) -> str:
    """Envoy's /stats/prometheus, limited to used stats the control loop reads."""
    from urllib.parse import quote

    return f"{admin_base_url.rstrip('/')}/stats/prometheus?usedonly&filter={quote(ENVOY_STATS_FILTER)}"
