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


def outcome_dict(o: FleetOutcome) -> dict[str, Any]:
    d: dict[str, Any] = {"fleet": o.label, "feasible": o.plan.feasible, "plan_reason": o.plan.reason,
                         "planned_cost_per_hour_usd": _num(o.planned_cost_per_hour_usd),
                         "planned_pools": {p.name: p.replicas for p in o.plan.pools}}
    if o.fleet is not None and o.sim is not None:
        d.update({
            "cost_per_hour_usd": _num(o.cost_per_hour_usd),
            "pools": {p.name: {"replicas": p.replicas, "instance_type": p.instance_type,
                               "price_per_hour_usd": p.price_per_hour_usd} for p in o.fleet.pools},
            "meets_sla": o.meets_sla,
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


def comparison_markdown(c: Comparison) -> list[str]:
    tiers = sorted({t for o in c.outcomes if o.sim for t in o.sim.by_tier})
    head = "| fleet | planned $/h | simulated fleet | $/h | " + " | ".join(
        f"{t} within bound / p99" for t in tiers) + " | $/1M req | meets SLAs |"
    lines = [f"### Workload `{c.workload.name}`", "", c.workload.description, "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for o in c.outcomes:
        if o.sim is None or o.fleet is None:
            lines.append(f"| {o.label} | infeasible | {o.plan.reason} | - | " + " | ".join("-" for _ in tiers) + " | - | no |")
            continue
        pools = ", ".join(f"{p.name} x{p.replicas}" for p in o.fleet.pools)
        cells = []
        for t in tiers:
            s = o.sim.by_tier.get(t)
            cells.append("-" if s is None else f"{_pct(s.compliance) if s.compliance is not None else 'n/a'} / "
                                               f"{s.p99_ms:.1f} ms")
        lines.append(f"| {o.label} | {o.planned_cost_per_hour_usd:.3f} | {pools} | {o.cost_per_hour_usd:.3f} | "
                     + " | ".join(cells) + f" | {o.sim.usd_per_million:.3f} | {'yes' if o.meets_sla else 'NO'} |")
    best = c.best_single
    saving = c.saving_pct
    lines += ["", (f"Heterogeneous: ${c.heterogeneous.cost_per_hour_usd:.3f}/h vs cheapest single-accelerator fleet "
                   f"meeting the SLAs ({best.label}): ${best.cost_per_hour_usd:.3f}/h -> saving **{saving:.1f}%**."
                   if best is not None and saving is not None else
                   "No single-accelerator fleet met the SLAs in simulation (or the heterogeneous one did not)."), ""]
    return lines


def sensitivity_markdown(comparisons: list[Comparison]) -> list[str]:
    lines = ["| mix | heterogeneous $/h | heterogeneous fleet | cheapest single meeting SLAs | its $/h | saving | "
             "het. gold / silver within bound |", "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        het, best = c.heterogeneous, c.best_single
        pools = ", ".join(f"{p.name} x{p.replicas}" for p in het.fleet.pools) if het.fleet else "-"
        comp = []
        for t in ("gold", "silver"):
            s = het.sim.by_tier.get(t) if het.sim else None
            comp.append(_pct(s.compliance) if s else "-")
        saving = c.saving_pct
        lines.append(f"| {c.workload.name} | {het.cost_per_hour_usd:.3f} | {pools} | {best.label if best else 'none'} | "
                     f"{best.cost_per_hour_usd:.3f} | {'-' if saving is None else f'{saving:.1f}%'} | "
                     f"{' / '.join(comp)} |" if best else
                     f"| {c.workload.name} | {het.cost_per_hour_usd:.3f} | {pools} | none | - | - | {' / '.join(comp)} |")
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
                   label=f"{label}: right-sized in simulation")
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
