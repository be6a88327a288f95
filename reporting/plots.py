"""The report's PNGs (matplotlib, Agg backend): latency per tier over time with the SLA lines,
traffic split per pool over time per tier, and cost.  Each function writes one file."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reporting.analysis import Report, tier_sort_key  # noqa: E402

POOL_COLOURS = {"cpu": "#4c72b0", "gpu": "#55a868", "inf2": "#c44e52", "": "#999999"}
TIER_COLOURS = {"gold": "#d4a017", "silver": "#7f7f7f", "bronze": "#a0522d"}


def _shade_peaks(ax: plt.Axes, report: Report) -> None:
    sched = list(report.run.schedule) + [(report.run.duration_s, 1.0)]
    for (t0, m), (t1, _) in zip(sched, sched[1:], strict=False):
        if m > 1.0:
            ax.axvspan(t0, t1, color="#f0e0ff", alpha=0.6, lw=0, label=f"load x{m:g}")


def plot_latency(report: Report, path: Path) -> Path:
    run = report.run
    tiers = [t.tier for t in report.tiers]
    fig, axes = plt.subplots(len(tiers), 1, figsize=(10, 2.6 * len(tiers)), sharex=True, squeeze=False)
    for ax, tier in zip(axes[:, 0], tiers, strict=True):
        _shade_peaks(ax, report)
        recs = [r for r in run.records if r.tier == tier]
        ok = [r for r in recs if r.ok]
        ax.scatter([r.t_unix_s - run.started_unix_s for r in ok], [max(r.latency_ms, 0.1) for r in ok], s=3,
                   alpha=0.35, color=TIER_COLOURS.get(tier, "k"), label="requests")
        bad = [r for r in recs if not r.ok]
        if bad:
            ax.scatter([r.t_unix_s - run.started_unix_s for r in bad], [max(r.latency_ms, 0.1) for r in bad], s=12,
                       marker="x", color="red", label="errors")
        xs = [b.t_s + report.bucket_s / 2 for b in report.buckets if tier in b.p99_ms]
        ys = [b.p99_ms[tier] for b in report.buckets if tier in b.p99_ms]
        ax.plot(xs, ys, color="black", lw=1.2, label=f"p99 per {report.bucket_s:g} s")
        info = run.tier(tier)
        if info and info.bound_ms:
            ax.axhline(info.bound_ms, color="red", ls="--", lw=1, label=f"SLA p99 <= {info.bound_ms:g} ms")
        ax.set_yscale("log")
        ax.set_ylabel(f"{tier} latency (ms)")
        ax.legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("seconds since start")
    fig.suptitle(f"Latency per tier over time: {run.label}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_traffic_split(report: Report, path: Path) -> Path:
    """One panel per (model, tier): each pool's share of its requests per time bucket."""
    run = report.run
    routes = sorted({(r.model, r.tier) for r in run.records}, key=lambda k: (k[0], tier_sort_key(k[1])))
    pools = sorted({r.pool for r in run.records})
    n = max(1, math.ceil(run.duration_s / report.bucket_s))
    counts = {k: [Counter() for _ in range(n)] for k in routes}  # type: ignore[var-annotated]
    for r in run.records:
        i = min(n - 1, max(0, int((r.t_unix_s - run.started_unix_s) // report.bucket_s)))
        counts[(r.model, r.tier)][i][r.pool] += 1
    xs = [i * report.bucket_s for i in range(n)]
    fig, axes = plt.subplots(max(1, len(routes)), 1, figsize=(10, 1.7 * max(1, len(routes)) + 0.8), sharex=True,
                             squeeze=False)
    labels = [(run.pool(p).label if run.pool(p) else (p or "no pool (error)")) for p in pools]  # type: ignore[union-attr]
    for ax, key in zip(axes[:, 0], routes, strict=False):
        _shade_peaks(ax, report)
        buckets = counts[key]
        stacks = [[100.0 * b[p] / max(1, sum(b.values())) for b in buckets] for p in pools]
        ax.stackplot(xs, stacks, labels=labels, colors=[POOL_COLOURS.get(p, "#999999") for p in pools], step="post")
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{key[1]}\n{key[0]}", fontsize=8)
    axes[0, 0].legend(loc="upper center", bbox_to_anchor=(0.5, 1.45), fontsize=8, ncol=len(pools) + 1)
    axes[-1, 0].set_xlabel(f"seconds since start ({report.bucket_s:g}-s buckets); % of each route's requests by pool")
    fig.suptitle(f"Traffic split per pool over time: {run.label}", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_cost(report: Report, path: Path) -> Path:
    cost = report.cost
    bars: list[tuple[str, float]] = [("local fleet\n(as provisioned)", cost["provisioned_per_hour_usd"])]
    het = cost.get("heterogeneous")
    if het and het.get("feasible"):
        bars.append(("planner:\nheterogeneous", het["cost_per_hour_usd"]))
    for kind, s in sorted(cost.get("single_accelerator", {}).items()):
        if s.get("feasible"):
            bars.append((f"planner:\nonly {kind}", s["cost_per_hour_usd"]))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=["#888"] + ["#4c72b0"] * (len(bars) - 1))
    for i, (_, v) in enumerate(bars):
        ax.text(i, v, f"${v:.3f}/h", ha="center", va="bottom", fontsize=8)
    infeasible = [k for k, s in cost.get("single_accelerator", {}).items() if not s.get("feasible")]
    title = f"Fleet $/hour for the measured demand ({report.run.label})"
    if infeasible:
        title += f"\ninfeasible single-accelerator fleets: {', '.join(infeasible)}"
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("$ per hour")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_plots(report: Report, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"latency": plot_latency(report, folder / "latency_per_tier.png"),
            "traffic": plot_traffic_split(report, folder / "traffic_split.png"),
            "cost": plot_cost(report, folder / "cost.png")}
