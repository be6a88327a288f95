"""What the CLI and the HTTP API both do: validate a submission and render a job's status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batch.inputs import InvalidLine, Row, StrictInputError, read_rows
from batch.jobs import JobView, parse_priority
from batch.store import JobStore
from model_repository.definitions import ModelDefinition

# Batch jobs take spare capacity: gold is interactive traffic's tier and is refused.
BATCH_TIERS = ("bronze", "silver")


def submit(store: JobStore, models: Mapping[str, ModelDefinition], *, model: str, lines: Iterable[str],
           tier: str = "bronze", priority: str | int = "normal", strict: bool = False, source: str = "") -> str:
    """Validate and submit.  ValueError names what is wrong; StrictInputError lists bad lines."""
    if model not in models:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(models))}")
    if tier not in BATCH_TIERS:
        raise ValueError(f"tier {tier!r} is not a batch tier; use one of {', '.join(BATCH_TIERS)}"
                         " (gold is kept for interactive traffic)")
    level = parse_priority(priority)
    items: list[Row | InvalidLine] = list(read_rows(lines, models[model]))
    invalid = [i for i in items if isinstance(i, InvalidLine)]
    if strict and invalid:
        raise StrictInputError(invalid)
    return store.submit(model=model, tier=tier, priority=level, items=items, source=source)


def status_dict(view: JobView, now_unix_s: float) -> dict[str, Any]:
    p = view.progress(now_unix_s)
    return {
        "job": view.job_id, "model": view.model, "tier": view.tier, "priority": view.priority,
        "state": view.state.value,
        "rows": {"total": view.rows_total, "written": view.rows_written, "failed": view.rows_failed,
                 "answered_not_written": view.rows_answered, "in_flight": view.rows_sent,
                 "synthetic": view.synthetic_rows},
        "progress": round(p.fraction, 6), "rows_per_s": round(p.rows_per_s, 3),
        "eta_s": None if p.eta_s is None else round(p.eta_s, 1),
        "cost_usd": round(view.cost_usd, 9),
        "by_pool": {pool: {"rows": u.rows, "pool_seconds": round(u.pool_seconds, 4), "cost_usd": round(u.cost_usd, 9),
                           "synthetic_outputs": u.synthetic} for pool, u in view.by_pool.items()},
        "retries": view.retries,
        "invalid_lines": [{"line": n, "reason": r} for n, r in view.invalid_lines],
        "created_unix_s": view.created_unix_s, "started_unix_s": view.started_unix_s,
        "finished_unix_s": view.finished_unix_s,
    }


def status_text(view: JobView, now_unix_s: float) -> str:
    d = status_dict(view, now_unix_s)
    r = d["rows"]
    eta = "-" if d["eta_s"] is None else f"{d['eta_s']:.0f} s"
    lines = [
        f"job {view.job_id}  {view.model} / {view.tier}  priority {view.priority}  {view.state.value}",
        f"  rows     {r['written']}/{r['total']} written ({d['progress']:.1%}), {r['failed']} failed,"
        f" {r['in_flight']} in flight, {view.retries} retried",
        f"  rate     {d['rows_per_s']:.1f} rows/s   ETA {eta}",
        f"  cost     ${d['cost_usd']:.6f} so far (pool time x price)",
    ]
    for pool, u in d["by_pool"].items():
        synth = "  SYNTHETIC outputs (not evidence of correctness)" if u["synthetic_outputs"] else ""
        lines.append(f"    {pool:<10} {u['rows']:>8} rows  {u['pool_seconds']:>9.3f} s  ${u['cost_usd']:.6f}{synth}")
    if view.invalid_lines:
        lines.append(f"  {len(view.invalid_lines)} malformed input line(s) left out:")
        lines.extend(f"    line {n}: {reason}" for n, reason in view.invalid_lines[:10])
        if len(view.invalid_lines) > 10:
            lines.append(f"    ... and {len(view.invalid_lines) - 10} more (status --json lists all)")
    return "\n".join(lines)
