"""Results of ``python -m router_lib compare`` as JSON, Markdown and a PNG plot (cost vs load)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from router_lib.compare import HETEROGENEOUS, Comparison, FleetOutcome
from router_lib.domain import Fleet


def _num(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _pools(fleet: Fleet) -> str:
    return ", ".join(f"{p.name} x{p.replicas}" for p in fleet.pools)


def outcome_dict(o: FleetOutcome) -> dict[str, Any]:
    d: dict[str, Any] = {"fleet": o.label, "feasible": o.plan.feasible, "plan_reason": o.plan.reason,
                         "planned_cost_per_hour_usd": _num(o.planned_cost_per_hour_usd),
                         "planned_pools": {p.name: p.replicas for p in o.plan.pools}}
    if o.milp_plan is not None:
        d["milp_plan"] = {"cost_per_hour_usd": _num(o.milp_plan.cost_per_hour_usd), "feasible": o.milp_plan.feasible,
                          "pools": {p.name: p.replicas for p in o.milp_plan.pools},
                          "met_sla_in_simulation": o.milp_met_sla}
        d["planner_error_pct"] = _num(o.planner_error_pct, 1)
    if o.fleet is not None and o.sim is not None:
        d.update({
            "cost_per_hour_usd": _num(o.cost_per_hour_usd),
            "pools": {p.name: {"replicas": p.replicas, "instance_type": p.instance_type, "accelerator": p.accelerator.value,
                               "models": list(p.models), "price_per_hour_usd": p.price_per_hour_usd}
                      for p in o.fleet.pools},
            "meets_sla": o.meets_sla,
            "meets_sla_on_second_trace": o.holdout_meets_sla,
            "headroom": o.headroom,
            "requests": o.sim.requests,
            "usd_per_million_requests": _num(o.sim.usd_per_million),
            "tiers": {t: {"requests": s.count, "compliance": _num(s.compliance, 6), "p50_ms": _num(s.p50_ms, 2),
                          "p95_ms": _num(s.p95_ms, 2), "p99_ms": _num(s.p99_ms, 2)} for t, s in o.sim.by_tier.items()},
            "usd_per_million_by_route": {f"{m}/{t}": _num(v) for (m, t), v in o.sim.usd_per_million_by_route.items()},
            "by_pool": {p: {"requests": s.requests, "usd_per_million": _num(s.usd_per_million),
                            "busy_fraction": _num(s.busy_fraction, 3)} for p, s in o.sim.by_pool.items()},
            "decide_ms_mean": _num(o.sim.decide_ms_mean, 3),
        })
    if o.adopted is not None:
        d["adopted"] = o.adopted
    if o.search is not None:
        d["search"] = {"start": o.search.start, "moves": list(o.search.moves), "stopped": o.search.stopped,
                       "simulations": o.search.simulations, "budget_spent": o.search.budget_spent,
                       "descents": [{"start": x.start, "start_cost_per_hour_usd": _num(x.start_cost_per_hour_usd),
                                     "cost_per_hour_usd": _num(x.cost_per_hour_usd), "moves": list(x.moves),
                                     "stopped": x.stopped} for x in o.search.descents]}
    return d


def comparison_dict(c: Comparison) -> dict[str, Any]:
    best = c.best_single
    return {
        "workload": c.workload.name, "description": c.workload.description, "duration_s": c.workload.duration_s,
        "seed": c.workload.seed,
        "peak_demand_per_s": {f"{m}/{t}": round(v, 1) for (m, t), v in sorted(c.workload.peak_demand().items())},
        "fleets": [outcome_dict(o) for o in c.outcomes],
        "best_single_accelerator": best.label if best else None,
        "saving_pct": _num(c.saving_pct, 1),
        "never_worse": c.never_worse,
        "simulations": c.simulations,
        "simulated_s": round(c.simulated_s, 1),
    }


def profiles_dict(fleet: Fleet) -> dict[str, Any]:
    """The profiles a result was computed with: results depend on them, so they travel along."""
    return {
        f"{model}/{acc.value}": {
            "instance_type": p.instance_type, "latency_ms_by_batch": dict(sorted(p.latency_ms_by_batch.items())),
            "instances_per_replica": p.instances_per_replica, "max_batch_size": p.max_batch_size,
            "p99_over_p50": p.p99_over_p50, "provenance": p.provenance.kind, "date": p.provenance.date,
            "machine_or_source": (p.provenance.machine or p.provenance.source)[:160],
        }
        for (model, acc), p in sorted(fleet.profiles.items(), key=lambda kv: (kv[0][0], kv[0][1].value))
    }


def profiles_markdown(fleet: Fleet) -> list[str]:
    lines = ["| profile | provenance | L(1) ms | L(max batch) ms | max batch | instances | p99/p50 |",
             "|---|---|---|---|---|---|---|"]
    for name, d in profiles_dict(fleet).items():
        table = d["latency_ms_by_batch"]
        lines.append(f"| {name} | {d['provenance']} {d['date']} | {table[min(table)]:g} | {table[max(table)]:g} | "
                     f"{d['max_batch_size']} | {d['instances_per_replica']} | {d['p99_over_p50']:g} |")
    return lines


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def _error(o: FleetOutcome) -> str:
    """The planner's error as a table cell: ``+24.6% (0.903 / 0.725)``, MILP $/h / simulated $/h."""
    milp, err = o.milp_plan, o.planner_error_pct
    if milp is None or not milp.feasible:
        return "MILP: infeasible" + (f"; sim: {o.cost_per_hour_usd:.3f}" if o.meets_sla else "")
    if err is None:
        return f"MILP {milp.cost_per_hour_usd:.3f}; nothing met the SLAs"
    missed = ", plan missed SLAs" if o.milp_met_sla is False else ""
    return f"{err:+.1f}% ({milp.cost_per_hour_usd:.3f} / {o.cost_per_hour_usd:.3f}{missed})"


def _found(o: FleetOutcome) -> str:
    if o.adopted is not None:
        return o.adopted
    if o.search is None:
        return "MILP plan" + (f", headroom {o.headroom:g}" if o.headroom is not None else "")
    s = o.search
    spent = [d.stopped for d in s.descents if d.stopped.startswith("budget")]
    moves = f"{len(s.moves)} move" + ("" if len(s.moves) == 1 else "s")
    return f"{s.start} + {moves}" + (f" ({spent[0]} on {len(spent)} start(s))" if spent else "")


def _second(o: FleetOutcome) -> str:
    return "" if o.holdout_meets_sla is None else f" ({'yes' if o.holdout_meets_sla else 'no'})"


def comparison_markdown(c: Comparison) -> list[str]:
    tiers = sorted({t for o in c.outcomes if o.sim for t in o.sim.by_tier})
    head = ("| fleet | MILP plan $/h | smallest fleet meeting the SLAs in simulation | found from | $/h | "
            + " | ".join(f"{t} within bound / p99" for t in tiers)
            + " | $/1M req | meets SLAs (on a 2nd trace) | planner error (MILP / simulated $/h) |")
    lines = [f"### Workload `{c.workload.name}`", "", c.workload.description, "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for o in c.outcomes:
        milp = f"{o.milp_plan.cost_per_hour_usd:.3f}" if o.milp_plan and o.milp_plan.feasible else "infeasible"
        if o.sim is None or o.fleet is None:
            lines.append(f"| {o.label} | {milp} | none: {o.plan.reason} | - | - | " + " | ".join("-" for _ in tiers)
                         + f" | - | no | {_error(o)} |")
            continue
        cells = []
        for t in tiers:
            s = o.sim.by_tier.get(t)
            cells.append("-" if s is None else f"{_pct(s.compliance) if s.compliance is not None else 'n/a'} / "
                                               f"{s.p99_ms:.1f} ms")
        lines.append(f"| {o.label} | {milp} | {_pools(o.fleet)} | {_found(o)} | {o.cost_per_hour_usd:.3f} | "
                     + " | ".join(cells) + f" | {o.sim.usd_per_million:.3f} | {'yes' if o.meets_sla else 'NO'}"
                     f"{_second(o)} | {_error(o)} |")
    best = c.best_single
    saving = c.saving_pct
    lines += ["", (f"Heterogeneous: ${c.heterogeneous.cost_per_hour_usd:.3f}/h vs cheapest single-kind fleet "
                   f"meeting the SLAs ({best.label}): ${best.cost_per_hour_usd:.3f}/h -> saving **{saving:.1f}%**."
                   if best is not None and saving is not None else
                   "No single-kind fleet met the SLAs in simulation (or the heterogeneous one did not)."),
              f"Never worse than a single-kind fleet: **{'yes' if c.never_worse else 'NO'}**. "
              f"{c.simulations} simulations ({c.simulated_s:.0f} s).", ""]
    return lines


def sensitivity_markdown(comparisons: list[Comparison]) -> list[str]:
    lines = ["| mix | heterogeneous $/h | heterogeneous fleet | found from | cheapest single meeting SLAs | its $/h | "
             "saving | never worse | het. gold / silver within bound | het. / best single meet SLAs on a 2nd trace |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        het, best = c.heterogeneous, c.best_single
        pools = _pools(het.fleet) if het.fleet else "-"
        comp = []
        for t in ("gold", "silver"):
            s = het.sim.by_tier.get(t) if het.sim else None
            comp.append(_pct(s.compliance) if s else "-")
        saving = c.saving_pct
        single = (f"{best.label} ({_pools(best.fleet)}) | {best.cost_per_hour_usd:.3f}"
                  if best is not None and best.fleet is not None else "none | -")
        lines.append(f"| {c.workload.name} | {het.cost_per_hour_usd:.3f} | {pools} | {_found(het)} | {single} | "
                     f"{'-' if saving is None else f'{saving:.1f}%'} | {'yes' if c.never_worse else 'NO'} | "
                     f"{' / '.join(comp)} | {_yes(het.holdout_meets_sla)} / {_yes(best.holdout_meets_sla if best else None)} |")
    return lines


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def planner_error_markdown(comparisons: list[Comparison]) -> list[str]:
    """Per mix and fleet kind: the MILP plan's $/h against the smallest fleet that met the SLAs in
    simulation."""
    labels = [o.label for o in comparisons[0].outcomes] if comparisons else []
    lines = ["| mix | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for c in comparisons:
        by_label = {o.label: o for o in c.outcomes}
        lines.append(f"| {c.workload.name} | " + " | ".join(_error(by_label[label]) for label in labels) + " |")
    return lines


def plot_cost_vs_load(path: Path, factors: tuple[float, ...], costs: dict[str, list[float]], title: str,
                      measured: dict[str, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    styles = {HETEROGENEOUS: ("k", "o", 2.5)}
    colors: dict[str, Any] = {}
    for label, values in costs.items():
        xs = [f for f, v in zip(factors, values, strict=True) if math.isfinite(v)]
        ys = [v for v in values if math.isfinite(v)]
        if not xs:
            ax.plot([], [], label=f"{label} (infeasible)")
            continue
        color, marker, width = styles.get(label, (None, "s", 1.5))
        (line,) = ax.plot(xs, ys, marker=marker, linewidth=width, color=color, label=f"{label} (MILP plan)")
        colors[label] = line.get_color()
    for label, value in (measured or {}).items():
        ax.scatter([1.0], [value], marker="*", s=160, zorder=5, color=colors.get(label), edgecolors="k",
                   label=f"{label}: smallest fleet meeting the SLAs in simulation")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("load (x reference workload)")
    ax.set_ylabel("fleet cost ($/hour, on-demand us-east-1)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
