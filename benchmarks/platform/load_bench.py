"""Platform load benchmark: the router against each single-pool fleet under identical load, three
load shapes, and the simulator's prediction next to every measured figure.

Runs (``--duration-s`` each, same locust seed, so every fleet sees the same users and inputs):

- the router on the configured fleet (``fleet.yaml``: cpu real, gpu and inf2 emulated) under the
  steady, step and burst shapes;
- each single-pool fleet (a temporary fleet file holding only that pool) under the step shape,
  the router's step run being the comparison; a pool that cannot serve every model (no profile,
  e.g. digits_classifier on Inferentia) is reported as infeasible and not run.

For each run: per tier p50/p95/p99 and compliance, emulation lag, cost (provisioned and
capacity-priced as routed), and ``router_lib.simulator``'s prediction for the same arrivals.
Results: ``benchmarks/results/platform/load_bench.{json,md}`` + PNGs + one report per run.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT, write_results
from local_platform.platform import LocalPlatform, PlatformPorts
from reporting.analysis import Report, build_report
from reporting.page import render_markdown
from reporting.plots import write_plots
from reporting.recorder import record_run
from reporting.run_data import load_run

log = logging.getLogger(__name__)
OUT = ROOT / "benchmarks" / "results" / "platform"
WORK = ROOT / "build" / "bench" / "platform"
SIM_TARGET_GAP = 0.20


def single_pool_fleet(fleet_path: Path, pool: str, dest: Path) -> Path:
    """A fleet file with only ``pool`` (paths made absolute, so it can live anywhere)."""
    raw = yaml.safe_load(fleet_path.read_text())
    base = fleet_path.resolve().parent
    for key in ("prices", "tiers", "profiles"):
        if key in raw:
            raw[key] = str((base / raw[key]).resolve())
    raw["pools"] = [p for p in raw["pools"] if p["name"] == pool]
    if not raw["pools"]:
        raise ValueError(f"{fleet_path} has no pool named {pool!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def unservable_models(fleet_path: Path) -> list[str]:
    """Models of the project no pool of this fleet has a profile for."""
    from model_repository.definitions import load_models
    from router_lib.config import load_fleet

    models = tuple(load_models())
    fleet = load_fleet(fleet_path, models)
    return [m for m in models if not any(fleet.profiles.get((m, p.accelerator)) for p in fleet.pools)]


def run_one(fleet_path: Path, name: str, shapes: list[str], duration_s: float, seed: int) -> dict[str, Report]:
    """Start a platform on ``fleet_path`` and record one run per shape on it."""
    reports: dict[str, Report] = {}
    # Fresh work folder: persisted control state from an earlier platform there kept pools "unhealthy".
    shutil.rmtree(WORK / name / "platform", ignore_errors=True)
    platform = LocalPlatform(fleet_path=fleet_path, workdir=WORK / name / "platform",
                             ports=PlatformPorts(http=0, grpc=0))
    print(f"[{name}] starting the platform ({fleet_path.name}) ...", flush=True)
    platform.start()
    try:
        for shape in shapes:
            label = f"{name} / {shape}"
            print(f"[{name}] {shape}: {duration_s:.0f} s of load ...", flush=True)
            folder = WORK / name / shape
            record_run(platform, folder, label=label, shape=shape, duration_s=duration_s, seed=seed)
            reports[shape] = build_report(load_run(folder))
    finally:
        platform.stop()
    return reports


def summarise(report: Report) -> dict[str, Any]:
    sim = report.run.plan.get("simulated", {}).get("by_tier", {})
    cal = report.run.plan.get("simulated_calibrated", {}).get("by_tier", {})
    tiers = {}
    for t in report.tiers:
        s = sim.get(t.tier, {})
        gap = (s["p99_ms"] - t.p99_ms) / t.p99_ms if s and t.p99_ms and not math.isnan(t.p99_ms) else None
        c = cal.get(t.tier, {})
        cal_gap = (c["p99_ms"] - t.p99_ms) / t.p99_ms if c and t.p99_ms and not math.isnan(t.p99_ms) else None
        tiers[t.tier] = {
            "requests": t.requests, "errors": t.errors, "p50_ms": round(t.p50_ms, 2), "p95_ms": round(t.p95_ms, 2),
            "p99_ms": round(t.p99_ms, 2), "compliance": None if t.compliance is None else round(t.compliance, 5),
            "target": t.target, "met": t.met,
            "sim_p99_ms": s.get("p99_ms"), "sim_compliance": s.get("compliance"),
            "sim_gap": None if gap is None else round(gap, 3),
            "calibrated_sim_p99_ms": c.get("p99_ms"), "calibrated_sim_gap": None if cal_gap is None else round(cal_gap, 3),
        }
    return {
        "label": report.run.label, "duration_s": round(report.run.duration_s, 1), "requests": len(report.run.records),
        "offered_rps": round(report.offered_rps, 2), "tiers": tiers, "slas_met": report.verdict.passed,
        "verdict": list(report.verdict.lines), "emulation": list(report.emulation_lines),
        "unhealthy_pools": list(report.health_lines),
        "load_average": list(report.run.load_average),
        "share_by_tier_pool": {f"{s.tier}/{s.pool or 'none'}": round(s.share, 4) for s in report.shares},
        "cost": {k: report.cost.get(k) for k in ("provisioned_per_hour_usd", "provisioned_usd_per_million_requests",
                                                 "routed_usd_per_million_requests", "pools_used_per_hour_usd",
                                                 "best_single_accelerator", "planner_saving_pct")},
        "planner": {"heterogeneous": report.cost.get("heterogeneous"),
                    "single_accelerator": report.cost.get("single_accelerator")},
    }


def cost_verdict(router: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[str]:
    """Is the router's cost at or below every single-pool baseline that met the same SLAs?"""
    lines = []
    met = {n: b for n, b in baselines.items() if b.get("slas_met")}
    if not router["slas_met"]:
        lines.append("The router run itself missed an SLA target, so the cost claim is not established.")
    if not met:
        lines.append("No single-pool baseline met the SLAs: there is no SLA-equivalent baseline to compare cost with.")
    for key, what in (("provisioned_per_hour_usd", "provisioned $/h"),
                      ("routed_usd_per_million_requests", "capacity-priced $ per 1M requests")):
        r = router["cost"][key]
        for n, b in met.items():
            v = b["cost"][key]
            ok = r is not None and v is not None and r <= v + 1e-12
            lines.append(f"{what}: router {r} vs {n} {v}: {'at or below' if ok else 'ABOVE'}")
    return lines


def plot_summary(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = ["gold", "silver", "bronze"]
    names = list(runs)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    ax = axes[0]
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        xs = [j + i * width for j in range(len(tiers))]
        meas = [runs[n]["tiers"].get(t, {}).get("p99_ms") or 0 for t in tiers]
        sim = [runs[n]["tiers"].get(t, {}).get("sim_p99_ms") or 0 for t in tiers]
        ax.bar(xs, meas, width, label=f"{n} measured")
        ax.scatter(xs, [max(s, 0.1) for s in sim], marker="_", s=200, color="black", zorder=3,
                   label="simulated" if i == 0 else None)
    for b, c in ((50, "red"), (150, "orange")):
        ax.axhline(b, color=c, ls="--", lw=1)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(tiers))], tiers)
    ax.set_yscale("log")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("p99 per tier: measured (bars) vs simulated (black); SLA bounds dashed", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    prov = [runs[n]["cost"]["provisioned_per_hour_usd"] or 0 for n in names]
    routed = [runs[n]["cost"]["routed_usd_per_million_requests"] or 0 for n in names]
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], prov, 0.4, label="provisioned $/h")
    ax2 = ax.twinx()
    ax2.bar([x + 0.2 for x in xs], routed, 0.4, color="#c44e52", label="capacity-priced $/1M req")
    ax.set_xticks(xs, [n.replace(" / ", "\n") for n in names], fontsize=7)
    ax.set_ylabel("$ per hour (provisioned)")
    ax2.set_ylabel("$ per 1M requests (capacity-priced)")
    ax.set_title("Cost per run (marker = SLAs met)", fontsize=9)
    for x, n in zip(xs, names, strict=True):
        ax.text(x, max(prov) * 1.02, "SLA ok" if runs[n]["slas_met"] else "SLA missed", ha="center", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(runs: dict[str, dict[str, Any]], infeasible: dict[str, str], cost_lines: list[str],
             args: argparse.Namespace) -> str:
    lines = ["# Platform load benchmark: router vs single-pool fleets, measured vs simulated", "",
             f"Each run: {args.duration_s:.0f} s of the mixed-tier locust workload (`locustfiles/mixed_tiers.py`, "
             f"seed {args.seed}, {args.base_users} base users, closed loop) through Envoy on this machine. "
             "The CPU pool is real; GPU and Inferentia pools are emulated (real Triton on this CPU, timed to the "
             "accelerator profile) and their lag is reported per run. The machine is shared with other work: "
             "load averages are recorded per run.", "",
             "## SLA compliance and p99 per run (measured vs simulated for the same arrivals)", "",
             "sim = `router_lib.simulator` on the same arrivals with the profiles and policy; calibrated = the "
             "same arrivals with this machine's measured service times and the recorded weights (queueing only).",
             "",
             "| run | req/s | tier | p99 ms | sim p99 ms | gap | calibrated sim p99 ms | gap | within bound | target | met "
             "| load avg |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for n, r in runs.items():
        for t, s in r["tiers"].items():
            gap = "-" if s["sim_gap"] is None else f"{100 * s['sim_gap']:+.0f}%"
            cgap = "-" if s["calibrated_sim_gap"] is None else f"{100 * s['calibrated_sim_gap']:+.0f}%"
            comp = "best effort" if s["compliance"] is None else f"{100 * s['compliance']:.2f}%"
            target = "-" if s["target"] is None else f"{100 * s['target']:.1f}%"
            la = "/".join(f"{x:.1f}" for x in r["load_average"])
            lines.append(f"| {n} | {r['offered_rps']} | {t} | {s['p99_ms']} | {s['sim_p99_ms']} | {gap} | "
                         f"{s['calibrated_sim_p99_ms']} | {cgap} | {comp} | "
                         f"{target} | {'yes' if s['met'] else '**no**'} | {la} |")
    lines.append("")
    for key, what in (("sim_gap", "profiles + policy"), ("calibrated_sim_gap", "calibrated replay")):
        gaps = [abs(s[key]) for r in runs.values() for s in r["tiers"].values() if s[key] is not None]
        within = sum(1 for g in gaps if g <= SIM_TARGET_GAP)
        lines.append(f"- Simulator ({what}) vs measured p99: {within} of {len(gaps)} (run, tier) pairs within "
                     f"{100 * SIM_TARGET_GAP:.0f}%.")
    lines += ["", "![summary](load_bench.png)", "",
              "## Cost: router vs single-pool fleets (step shape, identical load)", "",
              "| run | SLAs met | provisioned $/h | provisioned $ per 1M req | capacity-priced $ per 1M req |",
              "|---|---|---:|---:|---:|"]
    for n, r in runs.items():
        c = r["cost"]
        lines.append(f"| {n} | {'yes' if r['slas_met'] else 'no'} | {c['provisioned_per_hour_usd']} | "
                     f"{c['provisioned_usd_per_million_requests']} | {c['routed_usd_per_million_requests']} |")
    for n, why in infeasible.items():
        lines.append(f"| {n} | not run: {why} | - | - | - |")
    lines += ["", *[f"- {line}" for line in cost_lines], "", "## Why tiers missed (per run)", ""]
    for n, r in runs.items():
        for v in r["verdict"] or ["all tiers met their targets"]:
            lines.append(f"- {n}: {v}")
    lines += ["", "## Emulation lag (per run)", ""]
    for n, r in runs.items():
        for e in r["emulation"]:
            lines.append(f"- {n}: {e}")
    unhealthy = [(n, u) for n, r in runs.items() for u in r["unhealthy_pools"]]
    if unhealthy:
        lines += ["", "## Pools the control plane called unhealthy (routing figures of these runs are suspect)", "",
                  *[f"- {n}: {u}" for n, u in unhealthy]]
    lines += ["", "Per-run reports with plots: `runs/<run>/report.md`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", type=Path, default=ROOT / "fleet.yaml")
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--shapes", nargs="+", default=["steady", "step", "burst"])
    ap.add_argument("--baselines", nargs="*", default=None, help="pools to run alone (default: every pool)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base-users", type=int, default=12)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    os.environ["LOAD_BASE_USERS"] = str(args.base_users)
    started = time.monotonic()
    fleet_raw = yaml.safe_load(args.fleet.read_text())
    pools = [p["name"] for p in fleet_raw["pools"]] if args.baselines is None else args.baselines
    runs: dict[str, dict[str, Any]] = {}
    reports: dict[str, Report] = {}
    for shape, report in run_one(args.fleet, "router", args.shapes, args.duration_s, args.seed).items():
        reports[f"router / {shape}"] = report
    infeasible: dict[str, str] = {}
    for pool in pools:
        path = single_pool_fleet(args.fleet, pool, WORK / "fleets" / f"only-{pool}.yaml")
        missing = unservable_models(path)
        if missing:
            infeasible[f"only {pool}"] = f"no profile for {', '.join(missing)} on this pool's accelerator"
            print(f"[only {pool}] not run: {infeasible[f'only {pool}']}", flush=True)
            continue
        for shape, report in run_one(path, f"only-{pool}", ["step"], args.duration_s, args.seed).items():
            reports[f"only {pool} / {shape}"] = report
    runs_dir = args.out / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    for name, report in reports.items():
        runs[name] = summarise(report)
        folder = runs_dir / name.replace(" / ", "-").replace(" ", "-")
        plots = write_plots(report, folder)
        (folder / "report.md").write_text(render_markdown(report, {k: v.name for k, v in plots.items()}))
    router_step = runs.get("router / step")
    baselines = {n: r for n, r in runs.items() if not n.startswith("router")}
    cost_lines = cost_verdict(router_step, baselines) if router_step else ["no router step run"]
    args.out.mkdir(parents=True, exist_ok=True)
    plot_summary(runs, args.out / "load_bench.png")
    md = markdown(runs, infeasible, cost_lines, args)
    write_results(args.out, "load_bench", {"runs": runs, "infeasible_baselines": infeasible, "cost_verdict": cost_lines,
                                           "settings": {"duration_s": args.duration_s, "shapes": args.shapes,
                                                        "seed": args.seed, "base_users": args.base_users,
                                                        "fleet": str(args.fleet)},
                                           "wall_s": round(time.monotonic() - started, 1)}, md)
    print(md)
    print(f"wrote {args.out}/load_bench.json, load_bench.md, load_bench.png, runs/ in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
