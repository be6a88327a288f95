"""The capacity report's PNGs (matplotlib, Agg backend), drawn from the summary alone:

1. ``cost_over_time.png``: every fleet's $/h (price x replicas that exist) over platform time on
   one axis, the demand on a second axis, and the planner's ideal $/h when the summary has it;
2. ``replicas.png``: desired and ready replicas per pool, one panel per autoscaled fleet;
3. ``p99_heterogeneous.png``: the heterogeneous autoscaled fleet's p99 per tier in 1-wall-second
   windows against the tier's bound, with its scale-up decisions marked.

Every axis is in platform units (wall / dilation) and says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reporting.analysis import tier_sort_key  # noqa: E402
from reporting.plots import POOL_COLOURS, TIER_COLOURS  # noqa: E402

FLEET_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
EXTRA_POOL_COLOURS = {"inf2-host": "#e08a8c"}
DEMAND_COLOUR = "#ddd5ec"  # light purple: apart from the grey that marks time outside the workload
DPI = 100


def _pool_colour(pool: str, i: int) -> str:
    return POOL_COLOURS.get(pool) or EXTRA_POOL_COLOURS.get(pool) or FLEET_COLOURS[i % len(FLEET_COLOURS)]


def _shade_workload(ax: plt.Axes, duration_s: float) -> None:
    """Outside the workload's window (before its start, after its end) in grey."""
    lo, hi = ax.get_xlim()
    ax.axvspan(min(lo, 0.0), 0.0, color="#eeeeee", lw=0, zorder=0)
    ax.axvspan(duration_s, max(hi, duration_s), color="#eeeeee", lw=0, zorder=0)
    ax.set_xlim(lo, hi)


def _heterogeneous(summary: Mapping[str, Any]) -> Mapping[str, Any] | None:
    name = summary["comparison"].get("heterogeneous")
    return next((r for r in summary["runs"] if r["fleet"] == name), None)


def plot_cost_over_time(summary: Mapping[str, Any], path: Path) -> Path:
    runs = summary["runs"]
    k = runs[0]["dilation"]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    demand_ax = ax.twinx()
    series = runs[0]["series"]
    windows = series["p99_windows"]["t_platform_s"]
    width = windows[1] - windows[0] if len(windows) > 1 else 1.0 / k
    demand_ax.bar(windows, series["requests_per_platform_s"], width=width, align="edge", color=DEMAND_COLOUR,
                  lw=0, label="demand (requests per platform s, right axis)")
    demand_ax.set_ylabel("demand: requests per platform second")
    het = summary["comparison"].get("heterogeneous")
    for i, r in enumerate(runs):
        s = r["series"]
        style = "-" if r["autoscaled"] else "--"
        ax.step(s["t_platform_s"], s["cost_per_hour_usd"], where="post", lw=2.8 if r["fleet"] == het else 1.5, ls=style,
                color=FLEET_COLOURS[i % len(FLEET_COLOURS)],
                label=f"{r['fleet']}: ${r['integrated_cost_usd']:.6f} over the run")
    ideal = summary.get("ideal")
    if ideal:
        ax.plot(ideal["t_platform_s"], ideal["cost_per_hour_usd"], color="black", ls=":", lw=1.6,
                label=f"planner ideal: ${ideal['cost_usd']:.6f}")
    ax.set_zorder(demand_ax.get_zorder() + 1)  # fleet lines above the demand bars
    ax.patch.set_visible(False)
    _shade_workload(ax, runs[0]["duration_s"])
    ax.set_ylim(bottom=0)
    demand_ax.set_ylim(bottom=0)
    ax.set_xlabel(f"platform seconds since the workload started (wall / {k:g}); grey: outside the workload")
    ax.set_ylabel("fleet $ per hour (price x replicas that exist)")
    handles = ax.get_legend_handles_labels()
    d_handles = demand_ax.get_legend_handles_labels()
    ax.legend(handles[0] + d_handles[0], handles[1] + d_handles[1], loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"Fleet cost rate over time, every fleet on the same arrivals (emulated, time dilated x{k:g})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_replicas(summary: Mapping[str, Any], path: Path) -> Path:
    """One row per (autoscaled fleet, pool): pools of one fleet drawn on one axis would hide each
    other wherever their counts are equal (two pools at 1 replica draw one line)."""
    runs = [r for r in summary["runs"] if r["autoscaled"]] or list(summary["runs"])
    rows = [(r, pool, counts) for r in runs for pool, counts in r["series"]["replicas"].items()]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.25 * len(rows) + 1.2), sharex=True, squeeze=False)
    k, duration = runs[0]["dilation"], runs[0]["duration_s"]
    previous = None
    for i, (ax, (r, pool, counts)) in enumerate(zip(axes[:, 0], rows, strict=True)):
        t = r["series"]["t_platform_s"]
        colour = _pool_colour(pool, i)
        existing = [0 if v is None else v for v in counts["existing"]]
        ax.fill_between(t, existing, step="post", color=colour, alpha=0.18, lw=0, label="exist (billed)")
        ax.step(t, counts["ready"], where="post", color=colour, lw=2.0, label="ready")
        ax.step(t, counts["desired"], where="post", color="black", ls="--", lw=1.0, label="desired")
        top = max([v for v in counts["desired"] + counts["existing"] if v is not None] + [1])
        ax.set_ylim(0, top * 1.15 + 0.2)
        ax.set_ylabel(pool, rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        if r["fleet"] != previous:
            changes = ", ".join(f"{p} {n}" for p, n in r["replica_changes_by_pool"].items())
            ax.set_title(f"{r['fleet']}: changes of desired per pool: {changes}; flaps: {r['flaps']}",
                         fontsize=9, loc="left")
            previous = r["fleet"]
        _shade_workload(ax, duration)
    axes[0, 0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel(f"platform seconds since the workload started (wall / {k:g}); grey: outside the workload")
    fig.suptitle("Replicas per pool over time, autoscaled fleets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _mark_scale_ups(ax: plt.Axes, steps: Sequence[Mapping[str, Any]]) -> None:
    for j, st in enumerate(steps):
        if st["decided_t_platform_s"] is not None:
            ax.axvline(st["decided_t_platform_s"], color="#2ca02c", lw=0.8, alpha=0.6,
                       label="scale-up decided" if j == 0 else None)
        if st["ready_t_platform_s"] is not None:
            ax.axvline(st["ready_t_platform_s"], color="#2ca02c", lw=0.8, ls=":", alpha=0.9,
                       label="new replica ready" if j == 0 else None)


def plot_p99(run: Mapping[str, Any], path: Path) -> Path:
    windows = run["series"]["p99_windows"]
    tiers = sorted(windows["platform_ms"], key=tier_sort_key)
    fig, axes = plt.subplots(max(1, len(tiers)), 1, figsize=(12, 2.4 * max(1, len(tiers)) + 0.8), sharex=True,
                             squeeze=False)
    k = run["dilation"]
    for ax, tier in zip(axes[:, 0], tiers, strict=False):
        values = windows["platform_ms"][tier]
        bound = run["tier_bounds_platform_ms"].get(tier)
        xs = [t for t, v in zip(windows["t_platform_s"], values, strict=True) if v is not None]
        ys = [v for v in values if v is not None]
        ax.plot(xs, ys, marker="o", ms=2.5, lw=1.0, color=TIER_COLOURS.get(tier, "black"), label="p99 per window")
        if bound is None:
            ax.text(0.01, 0.95, "best effort: no bound", transform=ax.transAxes, fontsize=8, va="top")
        else:
            ax.axhline(bound, color="red", ls="--", lw=1.2, label=f"bound {bound:g} ms")
            over = [(x, y) for x, y in zip(xs, ys, strict=True) if y > bound]
            if over:
                ax.scatter(*zip(*over, strict=True), color="red", s=14, zorder=3,
                           label=f"{len(over)} of {len(ys)} windows over")
        _mark_scale_ups(ax, run["step_responses"])
        ax.set_yscale("log")
        ax.set_ylabel(f"{tier} p99\n(platform ms)")
        labels = ax.get_legend_handles_labels()
        ax.legend(*labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel(f"platform seconds since the workload started; windows of 1 wall s = {1 / k:g} platform s")
    fig.suptitle(f"{run['fleet']}: p99 per tier against its bound (platform ms = wall ms / {k:g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_plots(summary: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """The PNGs by name (``cost``, ``replicas``, ``p99``); ``p99`` only with a heterogeneous autoscaled run."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"cost": plot_cost_over_time(summary, folder / "cost_over_time.png"),
           "replicas": plot_replicas(summary, folder / "replicas.png")}
    het = _heterogeneous(summary)
    if het is not None:
        out["p99"] = plot_p99(het, folder / "p99_heterogeneous.png")
    return out
