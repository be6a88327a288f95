"""Fair single-kind baselines for the platform benchmark: sized by the planner, like the rest.

Each single-kind fleet is what ``router_lib.planner.plan_single_accelerator(..., host_cpu=True)``
buys for the measured peak demand (the same planner ``python -m router_lib compare`` sizes its
single-kind fleets with): as many replicas as the plan asks, and, for an accelerator that cannot
run a model (Inferentia and the tree classifier), a ``<pool>-host`` pool of that accelerator's
instance type serving the model on its host vCPUs with the model's CPU profile, at the accelerator
instance's price.  On this machine the host pool is real (the classifier runs on this CPU, like
the CPU pool); the accelerator pool keeps the configured fleet's mode (emulated, synthetic outputs).

The planner may split one kind into pools per tier class (``cpu-gold``, ``cpu-bronze``); a local
fleet has one pool per kind, so the replicas of a kind are added up into one pool (the policy then
shares them across tiers, which a per-class plan would not).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from router_lib.domain import Accelerator


def absolute_paths(raw: dict[str, Any], fleet_path: Path) -> dict[str, Any]:
    """``raw`` with its prices/tiers/profiles paths made absolute (the copy can live anywhere)."""
    base = fleet_path.resolve().parent
    out = dict(raw)
    for key in ("prices", "tiers", "profiles"):
        if key in out:
            out[key] = str((base / out[key]).resolve())
    return out


def planned_pools(plan: Any, accelerator: Accelerator) -> tuple[int, dict[tuple[str, tuple[str, ...]], int]]:
    """(replicas of the accelerator's own kind, {(host instance type, models): replicas}) of ``plan``."""
    own = 0
    host: dict[tuple[str, tuple[str, ...]], int] = {}
    for p in plan.pools:
        if p.accelerator is accelerator:
            own += p.replicas
        else:
            key = (p.instance_type, tuple(p.models))
            host[key] = host.get(key, 0) + p.replicas
    return own, host


def single_kind_fleet_raw(raw: Mapping[str, Any], accelerator: Accelerator, plan: Any) -> dict[str, Any]:
    """The fleet file (as a dict) of the planned single-kind fleet of ``accelerator``.

    ``raw``: the configured fleet file, which has one pool of that accelerator (its name, mode and
    outputs are kept)."""
    if not plan.feasible:
        raise ValueError(f"no feasible single-kind plan for {accelerator.value}: {plan.reason}")
    template = next((p for p in raw["pools"] if p["accelerator"] == accelerator.value), None)
    if template is None:
        raise ValueError(f"the fleet has no pool of accelerator {accelerator.value!r} to size")
    own, host = planned_pools(plan, accelerator)
    pools = []
    if own:
        pools.append({**template, "replicas": own})
    for i, ((itype, models), n) in enumerate(sorted(host.items())):
        pools.append({"name": f"{template['name']}-host" + (f"-{i}" if i else ""), "accelerator": "cpu",
                      "instance_type": itype, "replicas": n, "mode": "real", "models": list(models)})
    out = {k: v for k, v in raw.items() if k != "pools"}
    out["pools"] = pools
    return out


def write_single_kind_fleet(fleet_path: Path, accelerator: Accelerator, plan: Any, dest: Path) -> Path:
    raw = absolute_paths(yaml.safe_load(fleet_path.read_text()), fleet_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# only {accelerator.value}: planned by plan_single_accelerator(host_cpu=True) for the measured "
              f"peak demand, ${plan.cost_per_hour_usd:.3f}/h (written by benchmarks.platform.load_bench)\n")
    dest.write_text(header + yaml.safe_dump(single_kind_fleet_raw(raw, accelerator, plan), sort_keys=False))
    return dest


def fleet_pools_disclosure(fleet: Any) -> list[dict[str, Any]]:
    """Per pool: what runs, what it answers, and what it is priced as (issue 12 item 7)."""
    out = []
    for p in fleet.pools:
        outputs = "real" if p.mode.value == "real" or p.outputs.value == "real" else "synthetic"
        out.append({
            "pool": p.name, "accelerator": p.accelerator.value, "instance_type": p.instance_type,
            "price_per_hour_usd": p.price_per_hour_usd, "replicas": p.replicas, "models": list(p.models),
            "mode": p.mode.value, "outputs": outputs,
            "what_runs": ("real Triton + ONNX Runtime on this machine's CPU" if p.mode.value == "real" else
                          "real Triton on this machine's CPU, timed to the accelerator profile"
                          + (", synthetic outputs (zeros of the right shape, labelled x-emulated)"
                             if outputs == "synthetic" else ", real outputs")),
        })
    return out


def profile_provenance(fleet: Any) -> list[dict[str, Any]]:
    """Per (model, accelerator) profile the fleet uses: provenance kind, machine, source, assumption."""
    out = []
    used = {(m, p.accelerator) for p in fleet.pools for m in p.models}
    for (model, acc), prof in sorted(fleet.profiles.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        if (model, acc) not in used:
            continue
        prov = prof.provenance
        out.append({"model": model, "accelerator": acc.value, "priced_as": prof.instance_type, "kind": prov.kind,
                    "date": prov.date, "machine": prov.machine or None, "source": prov.source or None,
                    "assumption": prov.assumption or None})
    return out
