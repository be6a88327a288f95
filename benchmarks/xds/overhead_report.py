"""Turn ``envoy_overhead``'s raw.json into the committed results: README.md, summary.json, overhead.png.

The cost of a part of the chain is measured within each repeat (the shipped phase minus the phase
without that part, both from the same repeat), then the median over repeats with its min-max: the
shared machine drifts between repeats far more than within one.

    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.overhead_report [benchmarks/results/overhead]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

TARGET_ADDED_P50_MS = 0.5
TARGET_THROUGHPUT_X = 0.85


def _stat(values: list[float], digits: int = 3) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def part_costs(phases: list[dict[str, Any]], reference: str = "shipped") -> dict[str, dict[str, Any]]:
    """For each variant: what the reference costs more than it, per repeat, then median/min/max."""
    by_repeat: dict[int, dict[str, dict[str, Any]]] = {}
    for p in phases:
        by_repeat.setdefault(p["repeat"], {})[p["path"]] = p
    costs: dict[str, dict[str, list[float]]] = {}
    for paths in by_repeat.values():
        ref = paths.get(reference)
        if ref is None:
            continue
        for name, p in paths.items():
            if name in (reference, "direct"):
                continue
            c = costs.setdefault(name, {"p50_ms": [], "envoy_cpu_us_per_req": [], "throughput_x": []})
            c["p50_ms"].append(ref["p50_ms"] - p["p50_ms"])
            c["envoy_cpu_us_per_req"].append(ref["envoy_cpu_us_per_req"] - p["envoy_cpu_us_per_req"])
            c["throughput_x"].append(p["req_per_s"] / ref["req_per_s"])
    return {name: {k: _stat(v) for k, v in c.items()} for name, c in costs.items()}


def cpu_bound_ceiling(summary: dict[str, Any], path: str) -> float:
    """Throughput x direct if every process were CPU-bound on the shared cores: the direct path's CPU
    per request (Triton + client) over this path's (Triton + client + Envoy)."""
    def per_req(p: str) -> float:
        s = summary[p]
        return sum(s[k]["median"] for k in ("triton_cpu_us_per_req", "client_cpu_us_per_req", "envoy_cpu_us_per_req"))
    return per_req("direct") / per_req(path)


def build_summary(raw: dict[str, Any]) -> dict[str, Any]:
    models = {}
    for model, data in raw["models"].items():
        s = data["summary"]
        shipped = s["shipped"]
        models[model] = {
            "direct": {k: s["direct"][k] for k in ("p50_ms", "p99_ms", "req_per_s", "triton_cpu_us_per_req",
                                                    "client_cpu_us_per_req")},
            "shipped": {k: shipped[k] for k in ("p50_ms", "p99_ms", "req_per_s", "added_p50_ms", "throughput_x_direct",
                                                "envoy_cpu_us_per_req")},
            "targets": {
                "added_p50_ms": TARGET_ADDED_P50_MS, "throughput_x_direct": TARGET_THROUGHPUT_X,
                "added_p50_met": shipped["added_p50_ms"]["median"] <= TARGET_ADDED_P50_MS,
                "throughput_met": shipped["throughput_x_direct"]["median"] >= TARGET_THROUGHPUT_X,
            },
            "cpu_bound_ceiling_x_direct": round(cpu_bound_ceiling(s, "shipped"), 3),
            "errors": {p: s[p]["errors"] for p in s},
            "cost_of_each_part": part_costs(data["phases"]),
            "paths": {p: {k: s[p][k]["median"] for k in ("added_p50_ms", "throughput_x_direct", "envoy_cpu_us_per_req",
                                                          "p50_ms", "p99_ms", "req_per_s")} for p in s},
        }
    return {k: raw[k] for k in ("benchmark", "date_utc", "machine", "command", "shipped_grpc_chain",
                                "seconds_per_phase", "repeats", "connections")} | {"envoy_core": raw.get("envoy_core"),
                                                               "client_core": raw.get("client_core"),
                                                               "cpu_idle": raw.get("cpu_idle")} | {
        "load_average_1m": _stat([p["load_average_1m"] for d in raw["models"].values() for p in d["phases"]], 2),
        "models": models,
    }


def _fmt(s: dict[str, float], digits: int = 2, sign: bool = False) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])} .. {f.format(s['max'])})"


def idle_sentence(idle: dict[str, Any] | None) -> str:
    """How the machine's idle CPUs waited during the run (recorded since 2026-11-30)."""
    if not idle or idle.get("cpuidle_driver") is None:
        return ""
    poll = idle.get("guest_halt_poll_ns")
    how = ("" if poll is None else " an idle CPU halted at once (no polling)" if poll == 0
           else f" an idle CPU polled {poll / 1000:g} us before halting")
    return f" CPU idle: cpuidle driver `{idle['cpuidle_driver']}`;{how} (`guest_halt_poll_ns` = {poll})."


def topology(raw: dict[str, Any]) -> str:
    """Where the processes ran, in words (``--envoy-core`` / ``--client-core``)."""
    if raw.get("envoy_core") is None:
        return "the client, Envoy and Triton share these 2 cores"
    if raw.get("client_core") is None:
        return (f"every Envoy pinned to CPU {raw['envoy_core']} alone, Triton and the client to the other CPU, on the "
                "direct path and through Envoy alike (the cluster's topology: the gateway Envoy runs in pods of its "
                "own, so its CPU is not taken from Triton's; what this does not show is the network hop between nodes)")
    return (f"every Envoy pinned to CPU {raw['envoy_core']}, the client to CPU {raw['client_core']}, Triton alone on the "
            "other CPU, on the direct path and through Envoy alike: Triton's core is its own as a Triton node's is, "
            "and a request crosses between cores on the direct path as it does through Envoy (in the cluster both "
            "cross the network; with the client beside Triton, the direct path alone skips every cross-core wake-up). "
            "Envoy's CPU is taken from the client's, not Triton's; what this does not show is the network hop between "
            "nodes")


def markdown(raw: dict[str, Any], summary: dict[str, Any], notes: str = "") -> str:
    lines = [
        "# Envoy overhead on the data path (issue 16, item 7)",
        "",
        *([notes.strip(), ""] if notes else []),
        "## How it was measured",
        "",
        f"Measured {raw['date_utc']} on {raw['machine']}: "
        + topology(raw)
        + ", and other sessions may run tests and benchmarks on the same machine "
        f"(1-minute load average {_fmt(summary['load_average_1m'])} over the phases). Figures are the median "
        "over repeats, with the min .. max over repeats in brackets; each repeat compares its own phases."
        + (f" Triton, every Envoy and the client ran at nice {raw['nice']}, so that they, not the other sessions' "
           "work, got the CPU first (direct and Envoy paths alike)." if raw.get("nice") else "")
        + idle_sentence(raw.get("cpu_idle")),
        "",
        f"Command: `{raw['command']}` (it writes this report too; "
        "`PYTHONPATH=. .venv/bin/python -m benchmarks.xds.overhead_report <this folder>` rewrites it from raw.json).",
        "",
        "- Upstream: one real Triton 2.51 replica of the local fleet's real CPU pool (`fleet.supervisor`), "
        "serving `digits_classifier` (ONNX RandomForest, sub-millisecond) and `text_embedding` (the MiniLM "
        "ensemble: tokenizer + ONNX). Nothing emulated.",
        f"- Envoy: the configuration the platform ships, built by `xds_server.build_snapshot` with the control "
        f"server's settings and `xds_server.bootstrap` ({', '.join(raw.get('shipped_parts', [])) or 'no edge parts'}); "
        f"gRPC listener chain `{raw['shipped_grpc_chain']}`. "
        "Each variant removes one part and runs as its own Envoy beside the others; phases rotate through all "
        f"paths in every repeat ({raw['repeats']} repeats x {raw['seconds_per_phase']:g} s per path and model).",
        f"- Load: `benchmarks/xds/grpc_loadgen.py`, closed loop, {raw['connections']} persistent HTTP/2 connections, "
        f"one request in flight each, `x-sla-tier: {raw.get('tier', 'gold')}`. The request is serialised once and sent as raw bytes "
        "through grpcio's C core: no protobuf or numpy work per request in Python. It is still a Python "
        "client (no C-speed KServe load generator installs from PyPI here) and it competes "
        + ("with Envoy for the two cores" if raw.get("envoy_core") is None else
           "with Triton for their core" if raw.get("client_core") is None else "with Envoy for their core")
        + ": its CPU per request is in the tables.",
        "",
        "## Envoy vs direct",
        "",
        "| model | path | p50 ms | added p50 ms | req/s | throughput x direct | Envoy CPU us/req | CPU-bound ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, data in raw["models"].items():
        s = data["summary"]
        for path in s:
            ceiling = f"{cpu_bound_ceiling(s, path):.2f}" if path != "direct" else ""
            lines.append(
                f"| {model} | {path} | {_fmt(s[path]['p50_ms'], 3)} | "
                f"{_fmt(s[path]['added_p50_ms'], 3, True) if path != 'direct' else ''} | "
                f"{s[path]['req_per_s']['median']:.0f} | "
                f"{_fmt(s[path]['throughput_x_direct']) if path != 'direct' else ''} | "
                f"{s[path]['envoy_cpu_us_per_req']['median']:.0f} | {ceiling} |")
    reuse = raw.get("upstream_connections", {})
    if reuse:
        lines += ["", "Upstream connection reuse (Envoy's own counters over the whole run, gRPC clusters): " + "; ".join(
            f"{name}: {r['requests']} requests over {r['connections']} connection(s)" for name, r in reuse.items()
            if name in ("shipped", "concurrency 1", "concurrency 2")) + "."]
    lines += ["", "CPU-bound ceiling: the direct path's CPU per request (Triton + client) over this path's "
              "(Triton + client + Envoy): the throughput ratio this path could reach if the two shared cores "
              "were the only limit.", "", "## Targets (shipped chain)", "",
              "| model | added p50 ms (target <= 0.5) | throughput x direct (target >= 0.85) | errors |",
              "|---|---|---|---|"]
    for model, m in summary["models"].items():
        t = m["targets"]
        lines.append(f"| {model} | {_fmt(m['shipped']['added_p50_ms'], 3, True)} {'met' if t['added_p50_met'] else 'MISSED'} | "
                     f"{_fmt(m['shipped']['throughput_x_direct'])} {'met' if t['throughput_met'] else 'MISSED'} | "
                     f"{sum(m['errors'].values())} |")
    lines += ["", "![Envoy overhead per variant](overhead.png)", "", "## What each part costs", "",
              "Shipped minus the variant without that part, per repeat (positive: the part costs that much).", "",
              "| model | variant | p50 ms | Envoy CPU us/req | variant throughput / shipped |", "|---|---|---|---|---|"]
    for model, m in summary["models"].items():
        for name, c in m["cost_of_each_part"].items():
            lines.append(f"| {model} | {name} | {_fmt(c['p50_ms'], 3, True)} | {_fmt(c['envoy_cpu_us_per_req'], 0, True)} | "
                         f"{_fmt(c['throughput_x'])} |")
    lines += ["", "Variants: " + "; ".join(f"**{v['name']}**: {v['note'] or _describe(v)}" for v in raw["variants"]), ""]
    return "\n".join(lines)


def _describe(v: dict[str, Any]) -> str:
    parts = [*(f"no {f}" for f in v["without_filters"]), *(f"no hcm.{f}" for f in v["without_hcm_fields"])]
    parts += [f"no route {p}" for p in v.get("without_route_parts", [])]
    parts += [f"no cluster {p}" for p in v.get("without_cluster_fields", [])]
    if v["bootstrap_change"]:
        parts.append(v["bootstrap_change"])
    return ", ".join(parts) or f"{v['concurrency']} workers"


def plot(raw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(raw["models"])
    bars = [max(2, len(raw["models"][m]["summary"]) - 1) for m in models]  # rows as tall as their bars
    fig, axes = plt.subplots(len(models), 3, figsize=(16, 1.2 + 0.3 * sum(bars) + 0.9 * len(models)), squeeze=False,
                             gridspec_kw={"height_ratios": bars})
    for row, model in enumerate(models):
        s = raw["models"][model]["summary"]
        names = [p for p in s if p != "direct"]
        y = range(len(names))
        for col, (key, label, target) in enumerate((
                ("added_p50_ms", "added p50 ms vs direct", TARGET_ADDED_P50_MS),
                ("throughput_x_direct", "throughput x direct", TARGET_THROUGHPUT_X),
                ("envoy_cpu_us_per_req", "Envoy CPU us per request", None))):
            ax = axes[row][col]
            med = [s[n][key]["median"] for n in names]
            err = [[m - s[n][key]["min"] for m, n in zip(med, names, strict=True)],
                   [s[n][key]["max"] - m for m, n in zip(med, names, strict=True)]]
            colors = ["tab:blue" if n == "shipped" else "tab:gray" for n in names]
            ax.barh(list(y), med, xerr=err, color=colors, capsize=3)
            ax.set_yticks(list(y), names, fontsize=8)
            ax.invert_yaxis()
            if target is not None:
                ax.axvline(target, color="tab:red", linestyle="--", label=f"target {target}")
                ax.legend(fontsize=8, loc="lower right")
            ax.set_title(f"{model}: {label}", fontsize=10)
    fig.suptitle(f"Envoy overhead, median and min-max of {raw['repeats']} repeats "
                 f"({raw['connections']} connections, shared 2-core VM, {raw['date_utc']})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    out = Path((argv or sys.argv[1:] or ["benchmarks/results/overhead"])[0])
    raw = json.loads((out / "raw.json").read_text())
    summary = build_summary(raw)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    notes = out / "notes.md"  # the analysis, written by hand after reading the figures
    (out / "README.md").write_text(markdown(raw, summary, notes.read_text() if notes.exists() else ""))
    plot(raw, out / "overhead.png")
    print((out / "README.md").read_text())


if __name__ == "__main__":
    main()
