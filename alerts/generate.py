"""Generates the Prometheus recording and alerting rules from the platform's own definitions.

The SLA tiers (data/tiers.yaml) and the metric names (router_lib/metric_names.py) are the one
source; this module turns them into `alerts/rules.yaml` (what promtool checks and tests) and
`k8s/base/monitoring/prometheusrule.yaml` (the same groups as a prometheus-operator
PrometheusRule). Run `python -m alerts.generate` to rewrite both, `--check` to fail when they are
stale (tests/deploy/test_alerts.py does).

SLIs, per tier, as clients see them at Envoy (virtual clusters named after the tiers):
- latency: a request is good when Envoy's upstream time is within the tier's `p99_ms`. The bound
  is a p99, so the objective is 99 % good requests: the error budget is 1 %.
- availability: a request is good when it is not answered 5xx; the objective is the tier's
  `target_compliance` (0.999: a budget of 0.1 %).
Alerts use the multi-window, multi-burn-rate scheme of the Google SRE workbook: page when both the
1 h and 5 m burn rates exceed 14.4 (2 % of a 30-day budget spent in an hour), or both 6 h and 30 m
exceed 6 (5 % in six hours). The short window makes the alert stop soon after the burn stops.
Best-effort tiers (no p99_ms) get no SLA alerts.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from router_lib import metric_names
from router_lib.config import load_tiers
from router_lib.domain import Tier

REPO = Path(__file__).resolve().parent.parent
TIERS_FILE = REPO / "data" / "tiers.yaml"
RULES_FILE = REPO / "alerts" / "rules.yaml"
PROMETHEUS_RULE_FILE = REPO / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"

LATENCY_OBJECTIVE = 0.99  # the "99" of p99: 1 % of requests may exceed the tier's bound
WINDOWS = ("5m", "30m", "1h", "6h")


@dataclass(frozen=True)
class BurnRateAlert:
    """Both windows above `factor` times the budget rate fire the alert."""

    suffix: str
    long_window: str
    short_window: str
    factor: float
    severity: str


BURN_RATE_ALERTS = (
    BurnRateAlert("Fast", "1h", "5m", 14.4, "page"),
    BurnRateAlert("Slow", "6h", "30m", 6.0, "page"),
)

ENVOY_TIME = "envoy_vhost_vcluster_upstream_rq_time"
ENVOY_XX = "envoy_vhost_vcluster_upstream_rq_xx"


def _le_matcher(bound_ms: float) -> str:
    """Matches the bucket label as Prometheus 2 ("50") and 3 ("50.0") store it."""
    text = f"{bound_ms:g}"
    return (f'le=~"{text}|{text}\\\\.0"' if "." not in text else f'le="{text}"')


def latency_slow_ratio(tier: Tier, window: str) -> str:
    assert tier.p99_ms is not None
    sel = f'envoy_virtual_cluster="{tier.name}"'
    return (
        f"1 - (sum(rate({ENVOY_TIME}_bucket{{{sel}, {_le_matcher(tier.p99_ms)}}}[{window}]))"
        f" / sum(rate({ENVOY_TIME}_count{{{sel}}}[{window}])))"
    )


def error_ratio(tier: Tier, window: str) -> str:
    sel = f'envoy_virtual_cluster="{tier.name}"'
    return (
        # `or vector(0)`: a tier without a single 5xx has a ratio of 0, not no series at all.
        f'(sum(rate({ENVOY_XX}{{{sel}, envoy_response_code_class="5"}}[{window}])) or vector(0))'
        f" / sum(rate({ENVOY_XX}{{{sel}}}[{window}]))"
    )


def sla_groups(tiers: list[Tier]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for tier in tiers:
        if tier.p99_ms is None:
            continue
        for w in WINDOWS:
            records.append({"record": f"tier:sla_latency_slow:ratio_rate{w}",
                            "expr": latency_slow_ratio(tier, w), "labels": {"tier": tier.name}})
        if tier.target_compliance is not None:
            for w in WINDOWS:
                records.append({"record": f"tier:sla_errors:ratio_rate{w}",
                                "expr": error_ratio(tier, w), "labels": {"tier": tier.name}})
        budgets = [("Latency", "tier:sla_latency_slow", 1 - LATENCY_OBJECTIVE,
                    f"requests slower than {tier.p99_ms:g} ms")]
        if tier.target_compliance is not None:
            budgets.append(("Error", "tier:sla_errors", 1 - tier.target_compliance, "5xx responses"))
        for kind, record, budget, what in budgets:
            for a in BURN_RATE_ALERTS:
                threshold = round(a.factor * budget, 6)
                alerts.append({
                    "alert": f"SLA{kind}BudgetBurn{a.suffix}",
                    "expr": (f'{record}:ratio_rate{a.long_window}{{tier="{tier.name}"}} > {threshold:g}'
                             f' and {record}:ratio_rate{a.short_window}{{tier="{tier.name}"}} > {threshold:g}'),
                    "labels": {"severity": a.severity, "tier": tier.name},
                    "annotations": {
                        "summary": f"{tier.name} tier is burning its {kind.lower()} budget {a.factor:g}x too fast",
                        "description": (f"Share of {what} over {a.long_window} and {a.short_window} is above "
                                        f"{threshold:.4g} ({a.factor:g} x the budget of {budget:.4g})."),
                    },
                })
    return [{"name": "sla-recording", "rules": records},
            {"name": "sla-burn-rate", "rules": alerts}]


def control_plane_group() -> dict[str, Any]:
    return {"name": "control-plane", "rules": [
        {"alert": "ControlPlaneDown",
         "expr": 'up{job="xds-control"} == 0 or absent(up{job="xds-control"})',
         "for": "2m", "labels": {"severity": "page"},
         "annotations": {"summary": "The xDS control server is not being scraped",
                         "description": "Envoy keeps its last routing config, but weights no longer follow load or cost."}},
        {"alert": "ControlLoopStalled",
         "expr": "rate(control_loop_tick_seconds_count[5m]) == 0",
         "for": "5m", "labels": {"severity": "page"},
         "annotations": {"summary": "The control loop has not ticked for 10 minutes",
                         "description": "Routing weights are stale: the server answers but its read-decide-push loop is stuck."}},
        {"alert": "EnvoyConfigRejected",
         "expr": "sum by (type_url) (increase(xds_nacks_total[5m])) > 0",
         "labels": {"severity": "warning"},
         "annotations": {"summary": "Envoy NACKed {{ $labels.type_url }}",
                         "description": "Envoy rejected a pushed config and keeps the previous one; see the control server's /status."}},
        {"alert": "EnvoyNotConnected",
         "expr": "max(xds_connected_streams) == 0",
         "for": "5m", "labels": {"severity": "page"},
         "annotations": {"summary": "No Envoy holds an ADS stream to the control server",
                         "description": "No weight change reaches the routing tier."}},
        {"alert": "XdsSlowConvergence",
         "expr": "histogram_quantile(0.99, sum by (le) (rate(xds_push_to_ack_seconds_bucket[10m]))) > 1",
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "p99 push-to-ACK above 1 s",
                         "description": "Envoy takes long to accept configs (measured locally: about 1 ms)."}},
        {"alert": "PoolUnhealthy",
         "expr": "router_pool_healthy == 0",
         "for": "2m", "labels": {"severity": "warning"},
         "annotations": {"summary": "Pool {{ $labels.pool }} has no ready replica",
                         "description": "Its traffic goes to the fallback pools (tiers.yaml fallback_order)."}},
    ]}


def emulation_group() -> dict[str, Any]:
    lag = "sum by (pool, model) (rate(emulation_lag_ms_total[10m]))"
    profile = "sum by (pool, model) (rate(emulation_profile_ms_total[10m]))"
    return {"name": "emulation", "rules": [
        {"record": "pool_model:emulation_lag:ratio_rate10m", "expr": f"{lag} / {profile}"},
        {"alert": "EmulationLagging",
         "expr": "pool_model:emulation_lag:ratio_rate10m > 0.1",
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "Emulated pool {{ $labels.pool }} runs slower than its profile",
                         "description": "This machine's real compute exceeds the accelerator profile by "
                                        "{{ $value | humanizePercentage }}; the emulated latencies are optimistic."}},
    ]}


def build_rules(tiers_file: Path = TIERS_FILE) -> dict[str, Any]:
    tiers = list(load_tiers(tiers_file).tiers.values())
    for tier in tiers:
        if tier.p99_ms is not None and tier.p99_ms not in metric_names.ENVOY_RQ_TIME_BUCKETS_MS:
            raise ValueError(f"tier {tier.name}: p99_ms {tier.p99_ms:g} is not an Envoy bucket edge "
                             f"{metric_names.ENVOY_RQ_TIME_BUCKETS_MS}; add it there and in the bootstraps")
    return {"groups": [*sla_groups(tiers), control_plane_group(), emulation_group()]}


def render_rules(rules: dict[str, Any]) -> str:
    header = "# Generated by `python -m alerts.generate` from data/tiers.yaml; do not edit.\n"
    return header + yaml.safe_dump(rules, sort_keys=False, width=120)


def render_prometheus_rule(rules: dict[str, Any]) -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "inference-platform", "labels": {"release": "kube-prometheus-stack"}},
        "spec": rules,
    }
    header = "# Generated by `python -m alerts.generate` (same groups as alerts/rules.yaml); do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated files are stale")
    args = parser.parse_args(argv)
    rules = build_rules()
    outputs = {RULES_FILE: render_rules(rules), PROMETHEUS_RULE_FILE: render_prometheus_rule(rules)}
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(REPO)} (run: python -m alerts.generate)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
