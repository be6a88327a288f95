"""``python -m local_platform demo``: capacity follows demand, and what it saves.

Demand rises to a peak and falls back (``data/workloads/capacity_rise_fall.yaml``); the same
arrivals go at the same instants through the heterogeneous fleet and through every
single-accelerator fleet that can serve the workload, each autoscaled by the same capacity
decider (``local_platform.capacity_experiment``: every pool emulated in dilated time, synthetic
outputs, said in the report).  The report compares what each fleet cost, integrated over the run,
with the planner's ideal for the same demand, and whether every tier kept its SLA.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from local_platform.capacity_experiment import (
    ROOT,
    FleetVariant,
    heterogeneous_variant,
    load_base_fleet,
    run_experiment,
    single_kind_variants,
    static_peak_variant,
)
from reporting.capacity import summarise_runs, write_summary
from reporting.capacity_plots import write_plots
from router_lib.domain import Fleet
from router_lib.planner import plan_fleet
from router_lib.workload import Workload, load_workload

log = logging.getLogger(__name__)

WORKLOAD = ROOT / "data" / "workloads" / "capacity_rise_fall.yaml"
DILATION = 40.0
# A run compresses a day of demand into 100 wall seconds, so the deciders' windows are compressed
# with it, in wall seconds: the capacity decider's defaults (300 s window, 60 s flap guard) and the
# routing policy's (30 s demand window, 10 s smoothing, 20 s hold) would be a third of that "day"
# and make every fleet hold its peak long after demand fell.  Three 1-s ticks is as short as the
# measurements allow (a 1-s rate sample is noisy); that is still 3% of the "day" where a real
# 5-minute window is 0.35% of one, so the runs overstate what windows and cold starts cost.
# Same settings for every fleet.
AUTOSCALING = {"scale_down_window_s": 3.0, "flap_guard_s": 2.0}
# Looser tiers share pools under the strictest tier's utilisation cap: what the planner assumes.
ROUTING = {"tier_isolation": False, "demand_window_s": 3.0, "smoothing_tau_s": 2.0, "measured_hold_s": 3.0}
HEADROOM = 1.2  # the capacity decider's default: the static fleet gets the same


def planner_ideal(fleet: Fleet, workload: Workload, dilation: float) -> Callable[[float], float]:
    """$/h of the cheapest fleet meeting every tier for the demand at platform time t (the
    planner with the decider's headroom, demand in the wall units the live decider sees)."""
    import numpy as np

    cache: dict[float, float] = {}

    def cost(t_platform_s: float) -> float:
        key = round(t_platform_s, 3)
        if key not in cache:
            demand: dict[tuple[str, str], float] = {}
            for s in workload.streams:
                rate = float(s.rate_at(np.array([t_platform_s]))[0]) / dilation
                demand[(s.model, s.tier)] = demand.get((s.model, s.tier), 0.0) + rate * HEADROOM
            cache[key] = plan_fleet(demand, fleet).cost_per_hour_usd
        return cache[key]

    return cost


def run_capacity(out: Path, workload: Workload, variants: Sequence[FleetVariant], *, dilation: float = DILATION,
                 interval_s: float = 1.0, notes: Sequence[str] = ()) -> dict[str, object]:
    """One side-by-side run and its summary (written to ``out``)."""
    shutil.rmtree(out / "runs", ignore_errors=True)
    folders = run_experiment(variants, workload, out / "runs", dilation=dilation, autoscaling=AUTOSCALING,
                             routing=ROUTING, interval_s=interval_s, notes=notes)
    ideal = planner_ideal(load_base_fleet(dilation), workload, dilation)
    summary = summarise_runs(folders, tick_s=interval_s, ideal=ideal, machine=machine_description(),
                             load_steps=any(s.pattern == "step" for s in workload.streams))
    write_summary(summary, out)
    write_plots(summary, out)
    return summary


def machine_description() -> str:
    from reporting.results_io import environment

    m = environment()["machine"]
    return f"{m['cpu']}, {m['cores']} cores (shared), {m['platform']}"


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Path(args.out)
    workload = load_workload(args.workload)
    variants = [heterogeneous_variant(args.max_replicas), *single_kind_variants(args.max_replicas)]
    if args.static:
        variants.append(static_peak_variant(load_base_fleet(DILATION), _wall_units(workload), HEADROOM))
    print(f"capacity demo: {workload.name}, {len(variants)} fleets side by side on the same arrivals, every pool "
          f"emulated (synthetic outputs) in time dilated x{DILATION:g} ...", flush=True)
    summary = run_capacity(out, workload, variants)
    print()
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'} (plots beside it), summary: {out / 'summary.json'}; "
          f"demo took {time.monotonic() - started:.0f} s")
    missed = [t for t in summary.get("targets", []) if isinstance(t, dict) and t.get("met") is False]  # type: ignore[union-attr]
    if missed:
        print("targets missed: " + "; ".join(str(t.get("name")) for t in missed))
    failed = sum(int(r.get("failed_requests", 0)) for r in summary.get("runs", []))  # type: ignore[union-attr]
    return 1 if failed else 0


def _wall_units(workload: Workload) -> Workload:
    """The workload with rates in the wall req/s a dilated fleet sees (for the static plan)."""
    return workload.scaled(1.0 / DILATION)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--workload", type=Path, default=WORKLOAD)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "demo")
    ap.add_argument("--max-replicas", type=int, default=16, help="per pool")
    ap.add_argument("--static", action="store_true", help="also run the heterogeneous fleet fixed for the peak")
