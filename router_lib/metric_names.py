"""The one list of metric names this platform exports (beyond Triton's and Envoy's own).

Dashboards, alert rules, autoscaling manifests and tests import or read these names from here so
that nothing drifts.  Each entry: name -> (type, labels, help).
"""

from __future__ import annotations

from collections.abc import Iterable

# Control server (xds_server, admin port /metrics).
CONTROL_PLANE: dict[str, tuple[str, tuple[str, ...], str]] = {
    "router_route_weight": ("gauge", ("model", "tier", "pool"), "Current routing weight (0-100) per model, tier and pool."),
    "router_decisions_total": ("counter", ("model", "tier"), "Policy decisions that changed a route's weights."),
    "router_pool_healthy": ("gauge", ("pool", "accelerator", "emulated"), "1 when the pool has a ready replica."),
    "router_pool_queue_depth": ("gauge", ("pool", "model"), "Pending requests in Triton, summed over replicas."),
    "router_pool_p99_ms": ("gauge", ("pool", "model"), "p99 latency in ms as Envoy saw it over the window."),
    # For dashboards and the capacity decider's latency signal (KEDA follows the decider's desired count).
    "router_pool_p95_ms": ("gauge", ("pool", "model"), "p95 latency in ms as Envoy saw it over the window."),
    "router_cost_per_1k_requests_usd": ("gauge", ("pool", "model", "tier"), "$ per 1000 requests at the tier's safe utilisation (the routing policy's own cost)."),
    "router_fleet_cost_per_hour_usd": ("gauge", ("pool", "accelerator", "emulated"), "$/hour of the pool's replicas (price x every replica that exists: ready, starting or draining)."),
    "router_fleet_spent_usd": ("gauge", ("pool",), "Integrated $ the pool has cost since the ledger started (replicas x price x time)."),
    "router_route_spent_usd": ("gauge", ("model", "tier"), "Integrated $ attributed to a route by its share of each pool's requests."),
    # The capacity decider's word per pool: what the cluster's scalers (KEDA) act on.
    "router_pool_desired_replicas": ("gauge", ("pool", "accelerator", "emulated"), "Replicas the capacity decider wants the pool to run."),
    "router_pool_ready_replicas": ("gauge", ("pool", "accelerator", "emulated"), "Replicas of the pool ready for traffic."),
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

# Batch jobs (``batch/metrics.py``): what a worker saw, and per job what the store holds (read at
# scrape time). ``sum(batch_queue_depth_rows)`` is what KEDA scales the workers on (k8s/batch/).
BATCH: dict[str, tuple[str, tuple[str, ...], str]] = {
    "batch_rows_answered_total": ("counter", ("model", "pool", "outcome"), "Rows answered (accepted into a job), by model and pool."),
    "batch_requests_total": ("counter", ("model", "outcome"), "Batch requests sent through Envoy, by outcome."),
    "batch_spare_capacity_rows_per_second": ("gauge", ("model",), "Spare capacity for the batch tier read from the control plane (-1: unknown)."),
    "batch_paused": ("gauge", ("model",), "1 while gold/silver need the pools and the worker waits."),
    "batch_in_flight_limit": ("gauge", ("model",), "Requests this worker may have in flight."),
    "batch_request_rows": ("gauge", ("model",), "Rows per request (kept inside the per-try timeout)."),
    "batch_job_rows": ("gauge", ("job", "model", "state"), "Rows of a job by state."),
    "batch_job_rows_per_second": ("gauge", ("job", "model"), "Rows written per second since the job started."),
    "batch_job_cost_usd": ("gauge", ("job", "model", "pool"), "Cost so far: pool time x the pool's price."),
    "batch_job_pool_seconds": ("gauge", ("job", "model", "pool"), "Pool time spent on the job."),
    "batch_queue_depth_rows": ("gauge", ("job",), "Rows not yet answered, per unfinished job."),
}

# ``nv_inference_request_failure``'s ``reason`` values the platform does not count as failed
# requests: ``REJECTED`` is a queue policy turning a request away before it ran -- a shed, which
# the edge answers 429 with a retry hint (Envoy's 5xx error rate does not count it either), or a
# batcher wake-up (``fleet.batcher_wake``, 50 a second per model on a shared pool), which no client
# sent.  Release gates, the control plane's error rates and the drain check read failures
# through ``counts_as_failure``; the pools dashboard shows REJECTED in a panel of its own.
NOT_FAILURES = frozenset({"REJECTED"})


def counts_as_failure(reason: str | None) -> bool:
    """Whether an ``nv_inference_request_failure`` sample with this ``reason`` label is a failed request."""
    return reason not in NOT_FAILURES


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
    # data/tiers.yaml); the SLA burn-rate alerts and the latency-vs-SLA dashboard read them.
    "envoy_vhost_vcluster_upstream_rq_time",
    "envoy_vhost_vcluster_upstream_rq_total",
    "envoy_vhost_vcluster_upstream_rq_xx",
)

# Buckets (ms) of Envoy's upstream_rq_time histograms (bootstrap stats_config.histogram_bucket_settings).
# Every tier's p99 bound (data/tiers.yaml) must be a bucket edge, or "requests within the bound"
# cannot be counted exactly; Envoy's default buckets lack 150.
# Gold and silver bounds in time dilated x10 (500, 1500), x20 (1000, 3000) and x40 (2000, 6000)
# are edges too (fleet ``time_dilation``; capacity experiments run at x40).
ENVOY_RQ_TIME_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000, 1500, 2000, 2500, 3000, 5000,
                            6000, 10000)

# Envoy's virtual clusters on the route configuration's virtual host are named after the tiers of
# data/tiers.yaml (xds_server builds one per tier; the default tier's also matches requests without
# the header); they appear as the envoy_virtual_cluster label of the envoy_vhost_vcluster_* metrics.


# Where each live signal comes from: a ``PoolModelMetrics`` field (router_lib/metrics.py), or
# ``tier_rate_per_s`` / ``ready_replicas`` of ``FleetMetrics``, -> the Triton series and the Envoy stats it is computed
# from (Envoy stat names before the Prometheus renaming, as Envoy's admin filter matches them).
# This is the one list: the deciders declare which fields they consume
# (``router_lib.policy.CONSUMED_METRICS`` and ``CONSUMED_FLEET_METRICS``), and the scraper parses, and asks Envoy for, only what
# those fields need (``triton_series_for``, ``envoy_stats_url``).
SIGNAL_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "queue_depth": (("nv_inference_pending_request_count",), ()),
    "request_rate_per_s": (("nv_inference_request_success", "nv_inference_request_failure"), ("upstream_rq_total",)),
    "error_rate": (("nv_inference_request_success", "nv_inference_request_failure"),
                   ("upstream_rq_total", "upstream_rq_xx")),
    "p95_ms": ((), ("upstream_rq_time",)),
    "p99_ms": ((), ("upstream_rq_time",)),
    "ready": ((), ()),  # a replica that answered its scrape is ready
    "emulation_lag_ms": (("emulation_executions_total", "emulation_lag_ms_total"), ()),
    "tier_rate_per_s": ((), ("vcluster.upstream_rq_total",)),
    "ready_replicas": ((), ()),  # replicas of a pool that answered their scrape
}


def _sources(signals: Iterable[str]) -> tuple[set[str], set[str]]:
    triton: set[str] = set()
    envoy: set[str] = set()
    for signal in signals:
        if signal not in SIGNAL_SOURCES:
            raise KeyError(f"no source known for signal {signal!r}; known: {sorted(SIGNAL_SOURCES)}")
        t, e = SIGNAL_SOURCES[signal]
        triton.update(t)
        envoy.update(e)
    return triton, envoy


def triton_series_for(signals: Iterable[str]) -> frozenset[str]:
    """The Triton series the scraper must parse to compute ``signals``."""
    return frozenset(_sources(signals)[0])


def envoy_stats_filter(signals: Iterable[str]) -> str:
    """An RE2 regex over Envoy's stat names matching exactly the stats ``signals`` need.  The full
    stats page holds tens of thousands of samples; parsing it every tick cost a fifth of a core."""
    stats = sorted(_sources(signals)[1])
    vcluster = [s.removeprefix("vcluster.") for s in stats if s.startswith("vcluster.")]
    cluster = [s for s in stats if not s.startswith("vcluster.")]
    parts = []
    if cluster:
        names = "|".join(("[0-9]xx" if s.endswith("_xx") else s.removeprefix("upstream_rq_")) for s in cluster)
        parts.append(rf"(\.upstream_rq_({names})$)")
    if vcluster:
        parts.append(rf"(\.vcluster\..+\.({'|'.join(vcluster)})$)")
    return "|".join(parts) or "^$"


def envoy_stats_url(admin_base_url: str, signals: Iterable[str]) -> str:
    """Envoy's /stats/prometheus, limited to the used stats that ``signals`` are computed from."""
    from urllib.parse import quote

    return f"{admin_base_url.rstrip('/')}/stats/prometheus?usedonly&filter={quote(envoy_stats_filter(signals))}"
