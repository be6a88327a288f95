"""``report.md`` for a capacity summary: the fleets side by side, issue #11's targets met or
missed, each autoscaled run's scale-ups, and the notes on what an emulated, dilated run shows.
Rendered from the summary alone (deterministic), so it can be regenerated from ``summary.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reporting.analysis import tier_sort_key


def _num(v: Any, fmt: str = "{:.4g}") -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else fmt.format(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not judged"}[met]


def _tiers(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({t for r in runs for t in r["within_bound"]}, key=tier_sort_key)


def fleet_table(summary: Mapping[str, Any]) -> list[str]:
    runs = summary["runs"]
    tiers = _tiers(runs)
    ideal = summary.get("ideal") is not None
    head = ["fleet", "kind", "autoscaled", "cost USD", "mean $/h", "vs cheapest single", "vs heterogeneous"]
    head += ["vs planner ideal"] if ideal else []
    head += [f"{t} {'within bound' if any(r['tier_bounds_wall_ms'].get(t) is not None for r in runs) else 'ok'}"
             for t in tiers]
    head += ["failed", "meets SLAs", "replica changes", "flaps", "outputs"]
    numeric = {i for i, h in enumerate(head) if h not in ("fleet", "kind", "autoscaled", "meets SLAs", "outputs")}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i in numeric else "---" for i in range(len(head))) + "|"]
    for r in runs:
        cells = [r["fleet"], r["kind"], "yes" if r["autoscaled"] else "no (static)",
                 _num(r["integrated_cost_usd"], "${:.6f}"), _num(r["mean_cost_per_hour_usd"], "${:.3f}"),
                 _ratio(r.get("cost_vs_cheapest_single")), _ratio(r.get("cost_vs_heterogeneous"))]
        cells += [_ratio(r.get("cost_vs_ideal"))] if ideal else []
        cells += [_pct(r["within_bound"].get(t)) for t in tiers]
        outputs = ", ".join(f"{p}: {o}" for p, o in r["outputs"].items())
        cells += [str(r["failed_requests"]), "yes" if r["meets_slas"] else "**no**", str(r["replica_changes"]),
                  str(r["flaps"]), outputs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _target_value(t: Mapping[str, Any]) -> str:
    value, unit = t["value"], t.get("unit")
    if value is None or isinstance(value, str):
        return _num(value)
    if unit == "ratio":
        return _ratio(value)
    if unit == "fraction":
        return _pct(value)
    if unit == "platform_s":
        return f"{value:.4g} platform s"
    return _num(value)


def target_table(summary: Mapping[str, Any]) -> list[str]:
    lines = ["| target | value | goal | verdict | detail |", "|---|---:|---|---|---|"]
    for t in summary["targets"]:
        lines.append(f"| {t['name']} | {_target_value(t)} | {t['target']} | {_verdict(t['met'])} | {t['detail']} |")
    return lines


def latency_table(summary: Mapping[str, Any]) -> list[str]:
    runs = summary["runs"]
    tiers = _tiers(runs)
    lines = ["| fleet | " + " | ".join(f"{t} p99 (bound), platform ms" for t in tiers) + " | timeline samples |",
             "|---|" + "---:|" * len(tiers) + "---:|"]
    for r in runs:
        cells = []
        for t in tiers:
            bound = r["tier_bounds_platform_ms"].get(t)
            cells.append(f"{_num(r['p99_platform_ms'].get(t), '{:.1f}')} ({'-' if bound is None else f'{bound:g}'})")
        lines.append(f"| {r['fleet']} | " + " | ".join(cells) + f" | {r['timeline_samples']} |")
    return lines


def cost_check_table(summary: Mapping[str, Any]) -> list[str]:
    lines = ["| fleet | ledger over the run | price x replicas integrated | ratio | ledger since its server started |",
             "|---|---:|---:|---:|---:|"]
    for r in summary["runs"]:
        lines.append(f"| {r['fleet']} | {_num(r['ledger_usd'], '${:.6f}')} | {_num(r['replica_integral_usd'], '${:.6f}')} "
                     f"| {_num(r['ledger_vs_replica_integral'], '{:.3f}')} | {_num(r['ledger_spent_usd_at_end'], '${:.6f}')} |")
    return lines


def step_table(run: Mapping[str, Any]) -> list[str]:
    steps = run["step_responses"]
    if not steps:
        return [f"{run['fleet']}: no pool's desired count rose."]
    lines = ["| pool | replicas | decided at (platform s) | after demand rise at | delay (platform s / wall s) | "
             "ready at | SLA broke | restored after ready (platform s) |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for s in steps:
        delay = ("-" if s["decision_delay_platform_s"] is None else
                 f"{s['decision_delay_platform_s']:.4g} / {s['decision_delay_wall_s']:.2f}")
        restore = s["restore_platform_s"]
        lines.append(f"| {s['pool']} | {s['from']} -> {s['to']} | {_num(s['decided_t_platform_s'])} | "
                     f"{_num(s['demand_rise_t_platform_s'])} | {delay} | {_num(s['ready_t_platform_s'])} | "
                     f"{'yes' if s['sla_broke'] else 'no'} | {'never' if restore is None else _num(restore)} |")
    return lines


def render_report(summary: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """The page; ``plots``: plot name -> file name beside the page."""
    runs = summary["runs"]
    first = runs[0]
    out = [f"# Capacity runs: {first['workload'] or 'workload'}, {len(runs)} fleets, time dilated x{first['dilation']:g}",
           "",
           f"Every pool emulated with synthetic outputs unless the outputs column says real. Times in platform "
           f"seconds (wall / k); the workload is {first['duration_s']:g} platform s = {first['duration_wall_s']:g} wall s. "
           f"Control tick: {summary['tick_wall_s']:g} wall s.", "", "## Fleets", "", *fleet_table(summary), ""]
    if summary.get("ideal"):
        out += [f"Planner ideal over the run: ${summary['ideal']['cost_usd']:.6f}.", ""]
    out += ["## Issue #11 targets (judged on the heterogeneous autoscaled run)", "", *target_table(summary), "",
            "## p99 per tier", "", *latency_table(summary), "",
            "## Cost: ledger against price x replicas", "", *cost_check_table(summary), ""]
    for r in runs:
        if r["autoscaled"]:
            out += [f"## Scale-ups: {r['fleet']}", "", *step_table(r), ""]
    titles = {"cost": "Fleet $/h over time", "replicas": "Replicas per pool", "p99": "p99 per tier against the bound"}
    if plots:
        out += ["## Plots", ""]
        for name, file in plots.items():
            out += [f"![{titles.get(name, name)}]({file})", ""]
    out += ["## Notes", "", *(f"- {n}" for n in summary["notes"]), ""]
    return "\n".join(out)
