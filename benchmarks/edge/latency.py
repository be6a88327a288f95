"""What the edge filters add to a request's latency, measured side by side in one run.

One real Triton CPU pool and one real Envoy (``EdgePlane``); the same Envoy is re-published with
each edge configuration in turn (waiting for the ACK), and each configuration gets the same
sequential keep-alive requests of the sub-millisecond ``digits_classifier`` (REST JSON and gRPC,
as tritonclient sends them) at batch 1 and 64.  Configurations are interleaved across repeats so drift on this shared
machine spreads over all of them; the figure is the median of the repeats' p50s, with their range.

    PYTHONPATH=. .venv/bin/python -m benchmarks.edge.latency --requests 400 --repeats 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from benchmarks.edge.plane import EdgePlane
from localnet.signals import interrupt_on_stop_signals
from xds_server.edge_settings import EdgeAuth, EdgeSettings, EdgeValidation, Identity
from xds_server.edge_tokens import jwks, mint, new_key
from xds_server.edge_validation import schemas_from_models

ROOT = Path(__file__).resolve().parents[2]
KEY = new_key()
ISSUER, AUDIENCE = "https://edge.bench", "kserve"
PROTOS = ("rest", "grpc", "rest-b64", "grpc-b64")


def configurations(plane: EdgePlane) -> dict[str, EdgeSettings]:
    auth = EdgeAuth(mode="closed", issuer=ISSUER, audiences=(AUDIENCE,), jwks=jwks(KEY),
                    identities=(Identity("bench", ("gold", "silver", "bronze"), requests_per_second=100000),))
    validation = EdgeValidation(enabled=True, models=schemas_from_models(plane.models))
    return {"none": EdgeSettings(), "validation": EdgeSettings(validation=validation),
            "auth": EdgeSettings(auth=auth), "auth+validation": EdgeSettings(auth=auth, validation=validation)}


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def run_rest(plane: EdgePlane, headers: dict[str, str], n: int, batch: int) -> list[float]:
    """http.client on one keep-alive connection: far less client jitter than ``requests``."""
    body = json.dumps({"inputs": [{"name": "float_input", "shape": [batch, 64], "datatype": "FP32",
                                   "data": [0.5] * 64 * batch}]}).encode()
    host, port = plane.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        conn.request("POST", "/v2/models/digits_classifier/infer", body=body,
                     headers={"content-type": "application/json", **headers})
        r = conn.getresponse()
        text = r.read()
        dt = time.perf_counter() - t
        if r.status != 200:
            raise RuntimeError(f"REST request failed: {r.status} {text[:300]!r}")
        if i >= 20:  # warm-up
            out.append(dt)
    conn.close()
    return out


def run_grpc(plane: EdgePlane, headers: dict[str, str], n: int, batch: int) -> list[float]:
    client = grpcclient.InferenceServerClient(plane.grpc_url)
    inp = grpcclient.InferInput("float_input", [batch, 64], "FP32")
    inp.set_data_from_numpy(np.full((batch, 64), 0.5, dtype=np.float32))
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        client.infer("digits_classifier", [inp], headers=headers, client_timeout=30)
        dt = time.perf_counter() - t
        if i >= 20:
            out.append(dt)
    client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="measured requests per configuration, protocol, repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edge")
    args = ap.parse_args(argv)
    plane = EdgePlane(artifacts=args.artifacts).start()
    token = mint(KEY, subject="bench", issuer=ISSUER, audience=AUDIENCE, ttl_s=24 * 3600)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        configs = configurations(plane)
        for repeat in range(args.repeats):
            order = list(configs) if repeat % 2 == 0 else list(reversed(configs))
            for name in order:
                plane.publish(configs[name])
                headers = {"authorization": f"Bearer {token}"} if configs[name].auth.closed else {}
                for proto, runner, batch in (("rest", run_rest, 1), ("grpc", run_grpc, 1),
                                             ("rest-b64", run_rest, 64), ("grpc-b64", run_grpc, 64)):
                    samples = runner(plane, headers, args.requests, batch)
                    row = {"p50_ms": percentile_ms(samples, 50), "p99_ms": percentile_ms(samples, 99),
                           "mean_ms": statistics.fmean(samples) * 1000}
                    results.setdefault(name, {}).setdefault(proto, []).append(row)
                    print(f"repeat {repeat + 1}/{args.repeats} {name:16s} {proto:4s} p50 {row['p50_ms']:.3f} ms "
                          f"p99 {row['p99_ms']:.3f} ms", flush=True)
    finally:
        plane.stop()
    write_results(results, args)
    return 0


def write_results(results: dict[str, dict[str, list[dict[str, float]]]], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_proto in results.items():
        for proto, rows in by_proto.items():
            p50s = [r["p50_ms"] for r in rows]
            base = [r["p50_ms"] for r in results["none"][proto]]
            summary.setdefault(name, {})[proto] = {
                "p50_ms_median": statistics.median(p50s), "p50_ms_min": min(p50s), "p50_ms_max": max(p50s),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in rows),
                "added_p50_ms": statistics.median(p50s) - statistics.median(base),
            }
    command = f"PYTHONPATH=. .venv/bin/python -m benchmarks.edge.latency --requests {args.requests} --repeats {args.repeats}"
    doc = {"command": command, "requests_per_run": args.requests, "repeats": args.repeats,
           "machine": f"{platform.machine()} {platform.system()}, shared 2-core VM",
           "model": "digits_classifier (real, CPU pool, batch 1 and 64)", "summary": summary, "runs": results}
    (args.out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Edge filters: added latency", "",
             f"Command: `{command}`", "",
             "One real Triton CPU pool (real `digits_classifier`, batch 1 and 64) behind one real Envoy (1 worker); "
             "sequential keep-alive requests (REST: http.client, gRPC: tritonclient); each configuration re-published to the same Envoy, interleaved "
             f"over {args.repeats} repeats of {args.requests} requests. Median of the repeats' p50 (range).", "",
             "REST: JSON (batch 1: 0.4 kB body; batch 64: 25 kB of numbers); gRPC: raw tensors as tritonclient "
             "sends them (batch 1: 0.3 kB; batch 64: 16 kB).", "",
             "| edge configuration | " + " | ".join(f"{p} p50 ms (range) | {p} added" for p in PROTOS) + " |",
             "|---" * (1 + 2 * len(PROTOS)) + "|"]
    for name, by_proto in summary.items():
        cells = []
        for proto in PROTOS:
            s = by_proto[proto]
            cells += [f"{s['p50_ms_median']:.3f} ({s['p50_ms_min']:.3f}-{s['p50_ms_max']:.3f})",
                      f"{s['added_p50_ms'] * 1000:+.0f} us"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Reading: (added by hand after each run: what the figures do and do not show)."]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    plot(summary, args.out / "added_latency.png")


def plot(summary: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, proto in enumerate(PROTOS):
        med = [summary[n][proto]["p50_ms_median"] for n in names]
        lo = [med[k] - summary[n][proto]["p50_ms_min"] for k, n in enumerate(names)]
        hi = [summary[n][proto]["p50_ms_max"] - med[k] for k, n in enumerate(names)]
        ax.bar([k + i * 0.2 for k in range(len(names))], med, 0.2, yerr=[lo, hi], label=proto, capsize=2)
    ax.set_xticks([k + 0.3 for k in range(len(names))], names)
    ax.set_ylabel("p50 latency, ms (median of repeats)")
    ax.set_title("digits_classifier through Envoy, by edge configuration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
