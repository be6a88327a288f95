"""The report as Markdown: printed by the demo and written next to the plots as ``report.md``
(self-contained apart from the PNGs beside it).  Deterministic for a given run, so it can be
golden-tested."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from reporting.analysis import Report, multiplier_at, tier_sort_key

MAX_CHANGES = 40


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "best effort" if v is None else f"{100 * v:.2f}%"


def _usd(v: Any, unit: str = "") -> str:
    return "-" if v is None else f"${v:,.4f}{unit}"


def tier_table(report: Report) -> list[str]:
    lines = ["| tier | bound | requests | errors | p50 ms | p95 ms | p99 ms | max ms | within bound | target | met |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t in report.tiers:
        lines.append(
            f"| {t.tier} | {'-' if t.bound_ms is None else f'{t.bound_ms:g} ms'} | {t.requests} | {t.errors} | "
            f"{_ms(t.p50_ms)} | {_ms(t.p95_ms)} | {_ms(t.p99_ms)} | {_ms(t.max_ms)} | {_pct(t.compliance)} | "
            f"{'-' if t.target is None else f'{100 * t.target:.1f}%'} | {'yes' if t.met else '**NO**'} |")
    return lines


def share_table(report: Report) -> list[str]:
    run = report.run
    pools = sorted({s.pool for s in report.shares})
    head = "| tier | " + " | ".join(run.pool(p).label if run.pool(p) else (p or "no pool") for p in pools) + " |"  # type: ignore[union-attr]
    lines = [head, "|---|" + "---:|" * len(pools)]
    by = {(s.tier, s.pool): s for s in report.shares}
    for tier in sorted({s.tier for s in report.shares}, key=tier_sort_key):
        cells = []
        for p in pools:
            s = by.get((tier, p))
            cells.append(f"{100 * s.share:.1f}% ({s.requests})" if s else "-")
        lines.append(f"| {tier} | " + " | ".join(cells) + " |")
    return lines


def phase_share_lines(report: Report) -> list[str]:
    """Share per pool of each tier's traffic in each phase of the load schedule (base vs step/burst)."""
    run = report.run
    if not run.schedule or all(m == 1.0 for _, m in run.schedule):
        return []
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in run.records:
        m = multiplier_at(run.schedule, r.t_unix_s - run.started_unix_s)
        counts[(r.tier, "base" if m == 1.0 else f"x{m:g}")][r.pool or "none"] += 1
    lines = ["| tier | phase | split |", "|---|---|---|"]
    for (tier, phase), c in sorted(counts.items(), key=lambda kv: (tier_sort_key(kv[0][0]), kv[0][1])):
        total = sum(c.values())
        split = ", ".join(f"{p} {100 * n / total:.0f}%" for p, n in sorted(c.items()))
        lines.append(f"| {tier} | {phase} | {split} |")
    return lines


def cost_lines(report: Report) -> list[str]:
    c = report.cost
    lines = [
        f"- Local fleet as provisioned ({', '.join(p.label for p in report.run.pools)}): "
        f"{_usd(c['provisioned_per_hour_usd'], '/h')}, {_usd(c.get('provisioned_usd_per_million_requests'))} "
        f"per 1M requests at this run's {report.offered_rps:.1f} req/s (idle accelerators included).",
        f"- Pools that carried traffic: {', '.join(c['pools_used']) or 'none'} "
        f"({_usd(c['pools_used_per_hour_usd'], '/h')}).",
    ]
    if c.get("routed_usd_per_million_requests") is not None:
        lines.append(f"- Traffic as routed, capacity-priced (each request at its pool's cost per inference at safe "
                     f"throughput for its tier): {_usd(c['routed_usd_per_million_requests'])} per 1M requests.")
    het = c.get("heterogeneous")
    if het:
        lines += ["", "Planner (MILP) for this run's measured peak demand "
                  f"({', '.join(f'{k} {v:g}/s' for k, v in c.get('demand_peak_items_per_s', {}).items())} items):", "",
                  "| fleet | feasible | $/hour | $ per 1M requests | pools |", "|---|---|---:|---:|---|"]
        for s in [het, *c.get("single_accelerator", {}).values()]:
            pools = ", ".join(f"{p['name']} x{p['replicas']}" for p in s["pools"]) or s["reason"]
            lines.append(f"| {s['label']} | {'yes' if s['feasible'] else 'no'} | {_usd(s['cost_per_hour_usd'])} | "
                         f"{_usd(s['usd_per_million_requests'])} | {pools} |")
        if c.get("best_single_accelerator"):
            lines.append("")
            lines.append(f"Best single-accelerator fleet: {c['best_single_accelerator']}; the heterogeneous plan "
                         f"saves {c.get('planner_saving_pct', 0):.1f}% against it.")
    return lines


def change_lines(report: Report) -> list[str]:
    if not report.changes:
        return ["No weight samples were recorded."]
    lines = []
    for ch in report.changes[:MAX_CHANGES]:
        after = ", ".join(f"{p}={w}" for p, w in sorted(ch.after.items()))
        before = ", ".join(f"{p}={w}" for p, w in sorted(ch.before.items())) or "start"
        lines.append(f"- t={ch.t_s:.0f}s {ch.model}/{ch.tier}: {before} -> {after}")
        for p, why in sorted(ch.reasons.items()):
            if why:
                lines.append(f"  - {p}: {why}")
    if len(report.changes) > MAX_CHANGES:
        lines.append(f"- ... {len(report.changes) - MAX_CHANGES} more changes (see status.jsonl)")
    return lines


def _gap(sim_p99: float | None, measured_p99: float) -> str:
    if sim_p99 is None or not measured_p99 or math.isnan(measured_p99) or math.isnan(sim_p99):
        return "-"
    return f"{100 * (sim_p99 - measured_p99) / measured_p99:+.0f}%"


def sim_lines(report: Report) -> list[str]:
    """Measured p99 per tier beside the profile-based and the calibrated-replay simulations."""
    sim = report.run.plan.get("simulated")
    if not sim:
        return []
    cal = report.run.plan.get("simulated_calibrated", {}).get("by_tier", {})
    lines = ["| tier | measured p99 ms | simulated (profiles + policy) p99 ms | gap | "
             "simulated (measured service times + recorded weights) p99 ms | gap | measured within bound | "
             "simulated within bound |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in report.tiers:
        s = sim["by_tier"].get(t.tier)
        if s is None:
            continue
        c = cal.get(t.tier, {})
        lines.append(f"| {t.tier} | {_ms(t.p99_ms)} | {_ms(s['p99_ms'])} | {_gap(s['p99_ms'], t.p99_ms)} | "
                     f"{_ms(c['p99_ms']) if c else '-'} | {_gap(c.get('p99_ms'), t.p99_ms)} | "
                     f"{_pct(t.compliance)} | {_pct(s['compliance'])} |")
    service = report.run.plan.get("simulated_calibrated", {}).get("service_times", {})
    if service:
        lines += ["", "Measured service time per execution (Triton) vs the profile at the same batch size:", ""]
        for pool, models in sorted(service.items()):
            for model, v in sorted(models.items()):
                lines.append(f"- {pool} / {model}: {v['ms_per_execution']:.1f} ms at mean batch {v['mean_batch']:g} "
                             f"(profile {v['profile_ms_at_batch']:.1f} ms)")
    return lines


def render_markdown(report: Report, plots: dict[str, str] | None = None) -> str:
    run = report.run
    plots = plots or {}
    sched = ", ".join(f"t={t:g}s x{m:g}" for t, m in run.schedule) or "-"
    out = [f"# Load report: {run.label}", "",
           f"Shape **{run.shape}** ({sched}), {run.duration_s:.0f} s, {len(run.records)} requests "
           f"({report.offered_rps:.1f} req/s offered by closed-loop users). Machine: {run.cpu_cores} cores, load "
           f"average {run.load_average[0]:.1f} at start and {run.load_average[1]:.1f} at end (shared machine).", "",
           "## Verdict", ""]
    if report.verdict.passed:
        out.append("Every tier met its SLA target.")
    else:
        out += [f"- {line}" for line in report.verdict.lines]
    out += ["", "## Per tier", "", *tier_table(report), "",
            "Within bound = share of all requests (errors count as misses) answered within the tier's p99 bound; "
            "percentiles are over successful requests (nearest rank).", ""]
    if "latency" in plots:
        out += [f"![latency per tier]({plots['latency']})", ""]
    out += ["## Where the traffic went", "", *share_table(report), ""]
    phase = phase_share_lines(report)
    if phase:
        out += ["By phase of the load schedule:", "", *phase, ""]
    if "traffic" in plots:
        out += [f"![traffic split]({plots['traffic']})", ""]
    out += ["Emulated pools are real Triton processes on this machine's CPU, timed to the accelerator's profile.", ""]
    if report.emulation_lines:
        out += ["Emulation on this machine:", "", *[f"- {line}" for line in report.emulation_lines], ""]
    out += ["## Cost", "", *cost_lines(report), ""]
    if "cost" in plots:
        out += [f"![cost]({plots['cost']})", ""]
    sim = sim_lines(report)
    if sim:
        out += ["## Simulator prediction for the same arrivals", "",
                "`router_lib.simulator` replayed this run's arrivals (each item of a batch as one arrival) twice: "
                "through the same fleet, profiles and policy (what the accelerators would do), and with this "
                "machine's measured service times and the weights the control plane really published (which "
                "tests only the simulator's queueing; see `reporting/calibrated.py`).", "", *sim, ""]
    out += ["## Control-plane weight changes", ""]
    if report.health_lines:
        out += ["**Pool health during the run** (routing figures depend on it):", "",
                *[f"- {line}" for line in report.health_lines], ""]
    out += [*change_lines(report), ""]
    if run.notes:
        out += ["## Notes", "", *[f"- {n}" for n in run.notes], ""]
    return "\n".join(out)
