"""A fake platform /metrics page: every name of router_lib/metric_names.py with made-up values.

Only for testing the PNG renderer without starting the platform: the values are synthetic (steady
rates, an exponential latency distribution), never measurements.  Being written from the same list
as the dashboards, it cannot show a dashboard name wrong; tests/platform/test_end_to_end.py checks
that every name it serves is also served by the running platform.
Served with the label sets the real exporters use (Triton's model/version plus the `pool` label
the scrape adds, Envoy's envoy_cluster_name / envoy_virtual_cluster).
"""

from __future__ import annotations

import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from router_lib import metric_names

POOLS = {"cpu": "cpu", "gpu": "gpu", "inf2": "inferentia"}
MODELS = ("text_embedding", "digits_classifier")
TIERS = ("gold", "silver", "bronze")
MEAN_LATENCY_MS = {"gold": 12.0, "silver": 40.0, "bronze": 90.0}


def _labels(**kv: object) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


def _histogram(name: str, labels: dict[str, object], edges: tuple[float, ...], count: float, mean: float) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    for edge in edges:
        share = 1 - math.exp(-edge / mean)
        lines.append(f"{name}_bucket{_labels(**labels, le=f'{edge:g}')} {count * share:.3f}")
    lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {count:.3f}")
    lines.append(f"{name}_sum{_labels(**labels)} {count * mean:.3f}")
    lines.append(f"{name}_count{_labels(**labels)} {count:.3f}")
    return lines


def exposition(elapsed_s: float) -> str:
    t = elapsed_s
    lines: list[str] = []
    wave = 1 + 0.5 * math.sin(t / 5)  # makes the plots move
    for name, (kind, labels, _help) in {**metric_names.CONTROL_PLANE, **metric_names.EMULATION, **metric_names.BATCH}.items():
        if kind == "histogram":
            lines += _histogram(name, {}, (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), 10 * t, 0.002)
            continue
        lines.append(f"# TYPE {name} {kind}")
        combos: list[dict[str, object]] = [{}]
        for label in labels:
            values: dict[str, tuple[object, ...]] = {
                "pool": tuple(POOLS), "model": MODELS, "tier": TIERS, "accelerator": ("cpu",),
                "emulated": ("false",), "type_url": ("type.googleapis.com/envoy.config.cluster.v3.Cluster",),
                "version": ("3f2a",), "state": ("total", "written"), "outcome": ("ok", "rejected"),
                "job": ("job-1",),
            }
            combos = [{**c, label: v} for c in combos for v in values.get(label, ("x",))]
        for c in combos:
            value = {"counter": 5 * t, "gauge": 30 * wave}[kind]
            if name == "xds_last_push_timestamp_seconds":
                value = time.time() - 3
            if name == "router_pool_healthy" or name == "xds_snapshot_version_info":
                value = 1
            lines.append(f"{name}{_labels(**c)} {value:.3f}")
    for name in metric_names.TRITON_READ:
        lines.append(f"# TYPE {name} {'gauge' if 'pending' in name else 'counter'}")
        for pool in POOLS:
            for model in MODELS:
                lab = _labels(model=model, version="1", pool=pool)
                if "pending" in name:
                    lines.append(f"{name}{lab} {3 * wave:.2f}")
                elif name == "nv_inference_request_failure":  # sheds and wake-ups, and failed requests
                    lines.append(f"{name}{_labels(model=model, version='1', pool=pool, reason='REJECTED')} {0.1 * t:.2f}")
                    lines.append(f"{name}{_labels(model=model, version='1', pool=pool, reason='BACKEND')} {0.02 * t:.3f}")
                elif name == "nv_inference_exec_count":
                    lines.append(f"{name}{lab} {10 * t:.2f}")
                else:
                    lines.append(f"{name}{lab} {40 * t * (1000 if name.endswith('_us') else 1):.2f}")
    for tier in TIERS:
        vc = {"envoy_virtual_host": "triton", "envoy_virtual_cluster": tier}
        lines += _histogram("envoy_vhost_vcluster_upstream_rq_time", vc, metric_names.ENVOY_RQ_TIME_BUCKETS_MS,
                            50 * t, MEAN_LATENCY_MS[tier])
        lines.append(f"envoy_vhost_vcluster_upstream_rq_total{_labels(**vc)} {50 * t:.2f}")
        lines.append(f"envoy_vhost_vcluster_upstream_rq_xx{_labels(**vc, envoy_response_code_class='2')} {49.9 * t:.2f}")
        lines.append(f"envoy_vhost_vcluster_upstream_rq_xx{_labels(**vc, envoy_response_code_class='5')} {0.1 * t:.2f}")
    for pool in POOLS:
        cl = {"envoy_cluster_name": f"triton_{pool}"}
        lines += _histogram("envoy_cluster_upstream_rq_time", cl, metric_names.ENVOY_RQ_TIME_BUCKETS_MS, 40 * t, 20)
        lines.append(f"envoy_cluster_upstream_rq_total{_labels(**cl)} {40 * t:.2f}")
        lines.append(f"envoy_cluster_upstream_rq_xx{_labels(**cl, envoy_response_code_class='2')} {40 * t:.2f}")
        lines.append(f"envoy_cluster_upstream_rq_active{_labels(**cl)} {4 * wave:.2f}")
    return "\n".join(lines) + "\n"


class FakeExporter:
    """Serves exposition() on 127.0.0.1 at a port the OS picks."""

    def __init__(self) -> None:
        started = time.monotonic()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = exposition(time.monotonic() - started).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeExporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
