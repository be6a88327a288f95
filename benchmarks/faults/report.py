"""The fault benchmark's results: ``summary.md`` (a table per scenario with its checks),
``summary.json`` (everything, with the per-5-second timeline) and ``timeline.png``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from benchmarks.faults.load import MixedLoad
from benchmarks.faults.scenarios import FaultBench, Result

BIN_S = 5.0


def timeline(load: MixedLoad, bin_s: float = BIN_S) -> list[dict[str, Any]]:
    bins: dict[int, dict[str, Any]] = defaultdict(lambda: {"ok": 0, "lost": 0, "refused": 0, "shed": 0, "lat": []})
    for r in load.records:
        b = bins[int(r.t_s // bin_s)]
        b[r.outcome] += 1
        if r.outcome == "ok":
            b["lat"].append(r.latency_s)
    out = []
    for k in sorted(bins):
        b = bins[k]
        lat = sorted(b.pop("lat"))
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else None
        out.append({"t_s": k * bin_s, **b, "p99_ms": round(p99, 1) if p99 is not None else None})
    return out


def plot(path: Path, bins: list[dict[str, Any]], bench: FaultBench, soak: dict[str, Any] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(14, 9), sharex=True)
    t = [b["t_s"] / 60 for b in bins]
    axes[0].plot(t, [b["ok"] / BIN_S for b in bins], label="ok req/s", color="tab:green")
    axes[0].bar(t, [b["lost"] / BIN_S for b in bins], width=BIN_S / 60, color="tab:red", label="lost req/s")
    axes[0].bar(t, [b["refused"] / BIN_S for b in bins], width=BIN_S / 60, color="tab:orange", alpha=0.7,
                label="refused req/s (Envoy down: never accepted)")
    axes[0].set_ylabel("requests / s")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(t, [b["p99_ms"] for b in bins], color="tab:blue")
    axes[1].set_yscale("log")
    axes[1].set_ylabel(f"p99 latency, ms ({BIN_S:.0f} s bins)")
    mem = bench.memory
    axes[2].plot([m[0] / 60 for m in mem], [m[1] / 2**20 for m in mem], color="tab:purple")
    axes[2].set_ylabel("control server RSS, MB")
    axes[2].set_xlabel("minutes since the load started")
    for ts, label in bench.marks:
        if label.endswith(("passed", "FAILED")) or label.startswith("soak: end"):
            continue
        for ax in axes:
            ax.axvline(ts / 60, color="grey", lw=0.6, alpha=0.6)
        if label.endswith(("SIGCONT", "full speed", "room again")):  # a fault's end: a line, no label
            continue
        axes[0].annotate(label.split(":")[0], (ts / 60, axes[0].get_ylim()[1]), rotation=90, fontsize=7,
                         va="top", ha="right", color="dimgrey")
    if soak:
        start = next(ts for ts, label in bench.marks if label.startswith("soak:"))
        for ax in axes:
            ax.axvspan(start / 60, (start + soak["duration_s"]) / 60, color="tab:olive", alpha=0.07)
    fig.suptitle("Fault scenarios, then the soak (shaded): mixed load through Envoy on 127.0.0.1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, results: list[Result], soak: dict[str, Any] | None, load: MixedLoad, bench: FaultBench,
                 *, short: bool, wall_s: float, rate_rps: float, workers: int, hang_timeout_s: float,
                 data_plane: dict[str, bool], tier_timeouts: float | None = None,
                 load_average: dict[str, float] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bins = timeline(load)
    plot(out / "timeline.png", bins, bench, soak)
    total = {k: sum(b[k] for b in bins) for k in ("ok", "lost", "refused", "shed")}
    md = ["# Fault and soak benchmark", ""]
    if soak is not None and short:
        md += [f"**This is the short version**: a {soak['duration_s'] / 60:.0f}-minute soak with a fault every "
               f"{soak['fault_every_s']:.0f} s. The full run is `python -m benchmarks.faults.run` (30-minute soak, "
               "a fault every 3 minutes).", ""]
    md += [f"Platform: `fleet.demo.yaml` with the CPU and GPU pools at 2 replicas each: the CPU pool is real (ONNX Runtime on this "
           "CPU); the GPU and Inferentia pools are **emulated** (real Triton processes with synthetic outputs timed to "
           "the accelerator profile). Load: both models x gold/silver/bronze x REST/gRPC, through Envoy on 127.0.0.1, "
           f"{rate_rps:g} req/s from {workers} paced workers (at most {workers} in flight). Liveness timeout of the "
           f"control server and Envoy: {hang_timeout_s:g} s. Per-try timeouts: "
           + (f"each tier's bound x {tier_timeouts:g}, as `make up` runs" if tier_timeouts else "off (one route timeout)")
           + f". Wall time {wall_s / 60:.1f} min."
           + (f" 1-minute load average of the machine (shared with other work): {load_average['start']:.2f} at the "
              f"start, {load_average['end']:.2f} at the end, {load_average['max']:.2f} at most (sampled every "
              "scenario)." if load_average else ""), "",
           "Outcomes: **lost** = accepted and not answered with a result (any 5xx or error status, reset, timeout); "
           "**refused** = the connection to Envoy was refused, the request could not be written to it, or it was sent on a "
           "keep-alive connection after the Envoy at its other end was killed and reset at once (Envoy down; never "
           "accepted; counted per scenario as `sent_after_kill_refused`); **shed** = 429 / "
           "RESOURCE_EXHAUSTED on purpose.", "",
           f"Whole run: {total['ok']} ok, {total['lost']} lost, {total['refused']} refused, {total['shed']} shed.", "",
           "What the running Envoy had (its config_dump) that the hung-replica scenarios depend on: "
           + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in data_plane.items()) + ".", "",
           "![timeline](timeline.png)", "", "## Scenarios", "",
           "| scenario | fault | expected | ok | lost | refused | measured | result |", "|---|---|---|---:|---:|---:|---|---|"]
    for r in results:
        measured = ", ".join(f"{k} {v}" for k, v in r.measured.items())
        md.append(f"| {r.name} | {r.fault} | {r.expected} | {r.counts['ok']} | {r.counts['lost']} | "
                  f"{r.counts['refused']} | {measured} | {'passed' if r.passed else '**FAILED**'} |")
    md += ["", "Checks:", ""]
    for r in results:
        for c in r.checks:
            md.append(f"- {r.name}: {'ok' if c['ok'] else '**FAILED**'}: {c['check']}")
        for ex in r.lost_examples:
            md.append(f"  - lost: `{ex}`")
    if soak is not None:
        m = soak["memory"]
        md += ["", f"## Soak ({soak['duration_s'] / 60:.1f} min{', short version' if short else ''})", "",
               f"Faults, one every {soak['fault_every_s']:.0f} s in turn: "
               + ", ".join(f"{f['name']} ({'passed' if f['passed'] else 'FAILED'})" for f in soak["faults"]) + ".",
               "Control-server faults and Envoy faults are not in the soak: the memory check needs one control-server "
               "process for the whole soak, and a single Envoy cannot keep requests in flight through its own death "
               "(both are covered by their scenarios above).", "",
               f"Requests: {soak['counts']['ok']} ok, {soak['counts']['lost']} lost, {soak['counts']['refused']} refused, "
               f"{soak['counts']['shed']} shed.", "",
               f"Control server RSS: {m.get('first_mb')} MB (median of the first minute) -> {m.get('last_mb')} MB "
               f"(median of the last minute), growth {m['growth']}, max {m.get('max_mb')} MB.", ""]
        for c in soak["checks"]:
            md.append(f"- {'ok' if c['ok'] else '**FAILED**'}: {c['check']}")
        for ex in soak["lost_examples"]:
            md.append(f"  - lost: `{ex}`")
    failed = [r.name for r in results if not r.passed] + (["soak"] if soak and not soak["passed"] else [])
    md += ["", f"Result: {'every expected outcome held' if not failed else 'FAILED: ' + ', '.join(failed)}."]
    write_results(out, "summary", {
        "short_version": short, "rate_rps": rate_rps, "workers": workers, "hang_timeout_s": hang_timeout_s,
        "tier_timeouts": tier_timeouts, "load_average_1m": load_average,
        "wall_s": round(wall_s, 1), "totals": total, "data_plane": data_plane, "scenarios": [r.to_json() for r in results], "soak": soak,
        "failed": failed, "marks": bench.marks, "timeline_5s": bins,
        "control_rss": [{"t_s": t, "rss_mb": round(b / 2**20, 1), "pid": p} for t, b, p in bench.memory[::5]],
    }, "\n".join(md))
