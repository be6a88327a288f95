"""The fleet comparison and issue #11's targets, judged from the per-run summaries, and the notes
that say what the runs do and do not show.

Each target is judged on the heterogeneous autoscaled run and states its verdict as met (True),
missed (False) or not judged (None, with the reason: a baseline or an event it needs did not
occur).  Why a third state: "met" for a target the run never exercised (no SLA breach to
restore, no single-accelerator fleet to compare with) would read as evidence it is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COST_TARGET = 0.75  # heterogeneous autoscaled / cheapest autoscaled single-accelerator fleet meeting the SLAs
COST_CEILING = 1.0
STATIC_TARGET = 1.3  # static peak provisioning / heterogeneous autoscaled
RESTORE_TARGET_PLATFORM_S = 5.0

Row = Mapping[str, Any]


def _cost(row: Row) -> float:
    return float(row["integrated_cost_usd"])


def _heterogeneous(rows: Sequence[Row]) -> Row | None:
    """The heterogeneous autoscaled run; of several, the one named "heterogeneous"."""
    hets = [r for r in rows if r["kind"] == "heterogeneous" and r["autoscaled"]]
    return next((r for r in hets if r["fleet"] == "heterogeneous"), hets[0] if hets else None)


def compare_fleets(rows: Sequence[Row]) -> dict[str, Any]:
    """The baselines by name, and each run's cost as a ratio to them (None where one is missing).

    The single-accelerator baseline is the cheapest *autoscaled* single-accelerator run that met
    the SLAs, so fleets are compared under the same decider; a fleet that missed them could be
    cheap by serving too few requests in time."""
    names = [r["fleet"] for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"fleet names must be unique to compare runs, got {names}")
    meeting = [r for r in rows if r["kind"] == "single-accelerator" and r["autoscaled"] and r["meets_slas"]
               and r["integrated_cost_usd"] is not None]
    cheapest = min(meeting, key=_cost) if meeting else None
    het = _heterogeneous(rows)
    static = next((r for r in rows if "static" in r["fleet"].lower() and not r["autoscaled"]), None)

    def ratio(row: Row, base: Row | None) -> float | None:
        if base is None or row["integrated_cost_usd"] is None or not _cost(base) > 0:
            return None
        return round(_cost(row) / _cost(base), 4)

    return {
        "cheapest_single_meeting_slas": cheapest["fleet"] if cheapest else None,
        "heterogeneous": het["fleet"] if het else None, "static": static["fleet"] if static else None,
        "ratios": {r["fleet"]: {"cost_vs_cheapest_single": ratio(r, cheapest), "cost_vs_heterogeneous": ratio(r, het)}
                   for r in rows},
    }


def _target(name: str, value: Any, unit: str, target: str, met: bool | None, detail: str) -> dict[str, Any]:
    """``unit``: how ``value`` reads: "ratio", "fraction", "count", "platform_s" (a string value
    such as "n/a" or "never" says itself)."""
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "detail": detail}


def _cost_targets(rows: Sequence[Row], comparison: Mapping[str, Any], het: Row) -> list[dict[str, Any]]:
    by_name = {r["fleet"]: r for r in rows}
    base = comparison["cheapest_single_meeting_slas"]
    ratio = comparison["ratios"][het["fleet"]]["cost_vs_cheapest_single"]
    why = (f"{het['fleet']} ${_cost(het):.6f} vs {base} ${_cost(by_name[base]):.6f} over the run" if base else
           "no autoscaled single-accelerator fleet met the SLAs: nothing to compare with")
    out = [_target("heterogeneous autoscaled cost vs the cheapest autoscaled single-accelerator fleet meeting the SLAs",
                   ratio, "ratio", f"<= {COST_TARGET:g}x", None if ratio is None else ratio <= COST_TARGET, why),
           _target("heterogeneous autoscaled cost never above that fleet's", ratio, "ratio", f"<= {COST_CEILING:g}x", None if ratio is None else ratio <= COST_CEILING,
                   why + " (one workload: 'never' is judged on this run only)")]
    static = comparison["static"]
    if static:
        s_ratio = comparison["ratios"][static]["cost_vs_heterogeneous"]
        out.append(_target("static peak provisioning vs the heterogeneous autoscaled fleet", s_ratio, "ratio",
                           f">= {STATIC_TARGET:g}x", None if s_ratio is None else s_ratio >= STATIC_TARGET,
                           f"{static} ${_cost(by_name[static]):.6f} vs {het['fleet']} ${_cost(het):.6f}"))
    return out


def _sla_targets(het: Row) -> list[dict[str, Any]]:
    out = []
    for tier, goal in het["target_compliance"].items():
        if goal is None:
            continue
        share = het["within_bound"].get(tier)
        bound = het["tier_bounds_platform_ms"].get(tier)
        out.append(_target(f"{tier} requests within bound", share, "fraction", f">= {100 * goal:g}%",
                           None if share is None else share >= goal - 1e-12,
                           f"p99 <= {bound:g} platform ms ({het['tier_bounds_wall_ms'][tier]:g} wall ms); "
                           f"{het['requests_by_tier'].get(tier, 0)} requests" if bound is not None else "no bound"))
    failed = het["failed_requests"]
    out.append(_target("failed requests", failed, "count", "0", failed == 0, f"of {het['requests']} requests"))
    return out


def timing_targets(het: Row, tick_s: float) -> list[dict[str, Any]]:
    k = het["dilation"]
    resolution = het["timeline_interval_wall_s"] or 1.0
    limit_wall = tick_s + resolution
    # Per load step, its first scale-up: a later one (a queue that built up long after the
    # step) is a response to something else, and measuring it against the step would charge the
    # decider for time it was right to wait.
    first_after: dict[float, float] = {}
    for s in het["step_responses"]:
        rise, delay = s["demand_rise_t_platform_s"], s["decision_delay_wall_s"]
        if rise is not None and delay is not None:
            first_after[rise] = min(delay, first_after.get(rise, delay))
    worst = max(first_after.values()) if first_after else None
    rises = len(het["demand_rises_t_platform_s"])
    out = [_target(
        "scale decision within one control tick of a load step", None if worst is None else round(worst / k, 4),
        "platform_s",
        f"<= {limit_wall / k:.4g} platform s (1 tick of {tick_s:g} wall s + the timeline's {resolution:.2g}-s resolution)",
        None if worst is None else worst <= limit_wall + 1e-9,
        f"{rises} demand rises, {len(first_after)} followed by a scale-up; the slowest first scale-up came "
        f"{worst:.2f} wall s after its rise" if first_after else
        f"{rises} demand rises, none followed by a scale-up")]
    broke = [s["restore_platform_s"] for s in het["step_responses"] if s["sla_broke"]]
    never = sum(1 for r in broke if r is None)
    measured = [r for r in broke if isinstance(r, int | float)]
    value: Any = "never" if never else (max(measured) if measured else "n/a")
    met = None if not broke else (never == 0 and max(measured) <= RESTORE_TARGET_PLATFORM_S)
    detail = (f"{len(broke)} scale-ups with the SLA broken, {never} not restored by the end or with no replica ready"
              if broke else "the SLA did not break around any scale-up: nothing to restore")
    out.append(_target("SLA restored after a new replica is ready", value, "platform_s",
                       f"<= {RESTORE_TARGET_PLATFORM_S:g} platform s", met, detail))
    return out


def issue_targets(rows: Sequence[Row], comparison: Mapping[str, Any], *, tick_s: float,
                  load_steps: bool = True) -> list[dict[str, Any]]:
    """Issue #11's targets, each with its value and verdict, judged on the heterogeneous autoscaled
    run.  ``load_steps`` False: the workload rises gradually (no load step), so the step-timing
    target is reported but not judged (a ramp needs a replica only once it crosses a level)."""
    het = _heterogeneous(rows)
    if het is None:
        return [_target("issue #11 targets", None, "count", "a heterogeneous autoscaled run", None,
                        "no heterogeneous autoscaled run among the runs: no target can be judged")]
    timing = timing_targets(het, tick_s)
    if not load_steps:
        decision = timing[0]
        timing[0] = {**decision, "met": None,
                     "detail": f"not judged: this workload has no load step (it rises gradually); {decision['detail']}"}
    return [*_cost_targets(rows, comparison, het), *_sla_targets(het), *timing]


def summary_notes(rows: Sequence[Row], *, machine: str | None, noise_sigmas: float) -> list[str]:
    """What the runs are, what they show and what they do not, in sentences for the page."""
    dilations = sorted({r["dilation"] for r in rows})
    k = ", ".join(f"x{d:g}" for d in dilations)
    real = sorted({f"{r['fleet']}/{p}" for r in rows for p, o in r["outputs"].items() if o == "real"})
    emulations = sorted({r["emulation"] for r in rows if r["emulation"]})
    notes = [
        ("Every pool of every fleet is emulated: a replica sleeps for its profiled service time and answers "
         "with synthetic outputs." if not real else f"Pools with real outputs: {', '.join(real)}; every other "
         "pool is emulated with synthetic outputs."),
        f"Time is dilated {k}: service times, tier bounds and arrival times x k. Times here are "
        "platform seconds (wall / k) unless marked wall; a p99 is given in wall ms (as measured) and platform ms.",
        *(f"Run files say: {e}." for e in emulations),
        "What the runs show: how the fleets compare under the same capacity decider, windows and bounds, on the "
        "same arrivals sent at the same wall instants (machine noise hits them alike): what each cost, whether it "
        "met the SLAs, and how its replica counts moved.",
        "What they do not show: real-world timing. Overheads that do not scale (Envoy, the client, Python) shrink "
        "k times in platform terms; a replica is ready when its Triton process is (this machine's start time in "
        "wall seconds), not after a cloud node's minutes; "
        "synthetic outputs say nothing about model quality or a real accelerator's throughput beyond its profile; "
        "one seeded workload is one sample.",
        f"Machine: {machine}." if machine else "Machine: not recorded in the run files.",
        "Cost: integrated_cost_usd is each ledger's difference over the workload's window (start to start + "
        "duration x k, wall): each control server's ledger starts with it, and the fleets start one after another. "
        "replica_integral_usd integrates price x replicas that exist over the sampled timeline as a cross-check.",
        "Single-accelerator fleet: every pool on one instance type (inf2 instances serving a model on their host "
        "CPUs count as inf2). The baseline is the cheapest autoscaled one that met the SLAs (gold and silver "
        "within bound at their target compliance, 0 failed requests).",
        "Step response: a demand rise is the first 1-wall-second window whose request count exceeds the mean of "
        f"the 5 before it by > 20% and by > {noise_sigmas:g} Poisson standard deviations; a decision's time is the "
        "first timeline sample showing it (an upper bound within one sample); restore is measured in 1-wall-second "
        "windows from the replica being ready.",
    ]
    for r in rows:
        if r["max_late_wall_ms"] is not None:
            notes.append(f"{r['fleet']}: the open-loop client sent up to {r['max_late_wall_ms']:g} wall ms late "
                         f"({r['max_late_wall_ms'] / r['dilation']:.2f} platform ms).")
        if r["timeline_gaps"]:
            notes.append(f"{r['fleet']}: {r['timeline_gaps']} timeline samples missing (the status read failed).")
    notes.extend(sorted({f"Run note: {n}" for r in rows for n in r["notes"]}))
    return notes
