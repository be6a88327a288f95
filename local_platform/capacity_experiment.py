"""Capacity experiments: the same arrivals through several fleets at once, each fleet a local
platform of its own (Triton replicas, Envoy, control server), and what each cost.

How it represents a real fleet on one small machine (said in every run file it writes):

* Every pool is emulated in time dilated ``k`` times (``router_lib.domain.dilate``): service times,
  tier bounds (and a profile's ``cold_start_s``, 0 in the shipped profiles) x k, arrival times x k.  Emulated replicas sleep for their service
  time and answer with synthetic outputs, so one 2-core machine carries tens of replicas, and each
  replica really adds capacity.  Prices stay per hour of platform time; the ledger counts platform
  time (wall / k).  What it does not show: overheads that do not scale (Envoy, the client, Python)
  shrink k times in platform terms, and a replica is ready when its Triton process is: this
  machine's start time in wall seconds, not a cloud node's minutes.
* The fleets run side by side on the same arrivals at the same wall-clock instants (one open-loop
  client each), so machine noise hits them alike.
* Baselines are sized and scaled the same way as the heterogeneous fleet: the same capacity
  decider, windows and bounds; a single-accelerator fleet whose accelerator cannot run a model
  serves it on its instances' host CPUs (the model's CPU profile at that instance's price).

Each run writes a folder: ``run.json`` (what ran), ``records.jsonl`` (every request as the client
saw it, wall ms), ``timeline.jsonl`` (the control server's ``/status`` every second).
``reporting.capacity`` turns the folders into the comparison.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_platform.platform import LocalPlatform, PlatformPorts
from locustfiles.open_loop import Arrival, run_arrivals
from router_lib.config import load_fleet
from router_lib.domain import Accelerator, EmulatedOutputs, Fleet
from router_lib.planner import plan_fleet
from router_lib.workload import Workload, make_trace

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]

# Each pool kind of the experiment: (pool name, accelerator, instance type).  ``inf2-host`` is the
# host CPUs of inf2 instances: what an Inferentia-only fleet serves its CPU-only models on.
POOL_KINDS = {
    "cpu": ("cpu", "cpu", "c7g.xlarge"),
    "gpu": ("gpu", "gpu", "g5.xlarge"),
    "inf2": ("inf2", "inferentia", "inf2.xlarge"),
    "inf2-host": ("inf2-host", "cpu", "inf2.xlarge"),
}


@dataclass(frozen=True)
class FleetVariant:
    """One fleet of the comparison.  ``pools``: pool kind -> (start, min, max) replicas."""

    name: str
    pools: Mapping[str, tuple[int, int, int]]
    autoscaled: bool
    models: Mapping[str, tuple[str, ...]] | None = None  # pool kind -> models (None: every profiled one)

    def fleet_yaml(self, dilation: float, autoscaling: Mapping[str, float], machine_limit: int,
                   routing: Mapping[str, float | bool] | None = None) -> str:
        lines = [f"# {self.name}: written by local_platform.capacity_experiment (emulated, dilated x{dilation:g})",
                 f"prices: {ROOT / 'data' / 'prices.yaml'}", f"tiers: {ROOT / 'data' / 'tiers.yaml'}",
                 f"profiles: {ROOT / 'profiles'}", f"time_dilation: {dilation:g}",
                 f"max_local_replicas: {machine_limit}",
                 "autoscaling: {" + ", ".join(f"{k}: {v:g}" for k, v in sorted(autoscaling.items())) + "}",
                 "routing: {" + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}"
                                          for k, v in sorted((routing or {}).items())) + "}",
                 "pools:"]
        for kind, (start, low, high) in self.pools.items():
            name, acc, itype = POOL_KINDS[kind]
            models = (self.models or {}).get(kind)
            extra = f", models: [{', '.join(models)}]" if models else ""
            lines.append(f"  - {{name: {name}, accelerator: {acc}, instance_type: {itype}, replicas: {start}, "
                         f"min_replicas: {low}, max_replicas: {high}, mode: emulated, outputs: synthetic{extra}}}")
        return "\n".join(lines) + "\n"


def single_kind_variants(max_replicas: int) -> list[FleetVariant]:
    """Every single-accelerator fleet that can serve the platform's two models."""
    return [
        FleetVariant("cpu only", {"cpu": (1, 1, max_replicas)}, True),
        FleetVariant("gpu only", {"gpu": (1, 1, max_replicas)}, True),
        # Neuron cannot run the tree ensemble: inf2 instances serve it on their host CPUs.
        FleetVariant("inf2 only (+ host CPU)", {"inf2": (1, 1, max_replicas), "inf2-host": (1, 1, max_replicas)}, True,
                     {"inf2-host": ("digits_classifier",)}),
    ]


def heterogeneous_variant(max_replicas: int) -> FleetVariant:
    return FleetVariant("heterogeneous", {"cpu": (1, 1, max_replicas), "gpu": (1, 0, max_replicas),
                                          "inf2": (1, 0, max_replicas)}, True)


def static_peak_variant(fleet: Fleet, workload: Workload, headroom: float) -> FleetVariant:
    """The heterogeneous fleet fixed at what the planner buys for the workload's peak."""
    plan = plan_fleet({k: v * headroom for k, v in workload.peak_demand().items()}, fleet)
    if not plan.feasible:
        raise ValueError(f"no static plan for the peak of {workload.name}: {plan.reason}")
    by_acc: dict[Accelerator, int] = {}
    for group in plan.pools:
        by_acc[group.accelerator] = by_acc.get(group.accelerator, 0) + group.replicas
    pools = {}
    for kind in ("cpu", "gpu", "inf2"):
        n = by_acc.get(Accelerator(POOL_KINDS[kind][1]), 0)
        if n:
            pools[kind] = (n, n, n)
    return FleetVariant("heterogeneous, static for the peak", pools, False)


def trace_arrivals(workload: Workload, dilation: float, seed: int | None = None) -> list[Arrival]:
    """The workload's seeded trace in wall time (platform times x dilation)."""
    trace = make_trace(workload, seed)
    return [Arrival(float(t) * dilation, trace.models[int(m)], trace.tiers[int(k)])
            for t, m, k in zip(trace.times_s, trace.model_index, trace.tier_index, strict=True)]


def warmup_arrivals(arrivals: Sequence[Arrival], warmup_s: float, sample_s: float = 2.0) -> list[Arrival]:
    """``warmup_s`` seconds of the trace's starting demand: its first ``sample_s`` seconds of
    arrivals, repeated.  (Replaying the trace's first ``warmup_s`` seconds instead left the fleets
    sized for wherever the trace had got to by then, not for where the run starts.)"""
    head = [a for a in arrivals if a.offset_s < sample_s]
    out: list[Arrival] = []
    start = 0.0
    while head and start < warmup_s:
        out.extend(Arrival(start + a.offset_s, a.model, a.tier) for a in head if start + a.offset_s < warmup_s)
        start += sample_s
    return out


def _start(fleet_path: Path, workdir: Path, interval_s: float, attempts: int = 3) -> LocalPlatform:
    """Start one platform on ports picked now; another platform starting replicas at the same
    time can take a picked port before it is bound, so a failed start is retried on new ports."""
    for attempt in range(1, attempts + 1):
        platform = LocalPlatform(fleet_path=fleet_path, workdir=workdir, ports=PlatformPorts(http=0, grpc=0),
                                 interval_s=interval_s)
        try:
            return platform.start()
        except (RuntimeError, TimeoutError) as e:  # start() stopped what it started
            if attempt == attempts:
                raise
            log.warning("starting %s failed (%s); retrying on new ports", fleet_path.parent.name, e)
    raise AssertionError("unreachable")


def _sample(platform: LocalPlatform, path: Path, stop: threading.Event, interval_s: float) -> None:
    with path.open("w") as f:
        while not stop.wait(interval_s):
            try:
                status = platform.status()
            except OSError as e:
                f.write(json.dumps({"t_unix_s": time.time(), "error": str(e)}) + "\n")
                continue
            keep = {k: status.get(k) for k in ("pools", "routes", "cost", "capacity", "last_error", "actuation")}
            f.write(json.dumps({"t_unix_s": time.time(), **keep}) + "\n")
            f.flush()


def run_experiment(variants: Sequence[FleetVariant], workload: Workload, out: Path, *, dilation: float,
                   autoscaling: Mapping[str, float], routing: Mapping[str, float | bool] | None = None,
                   machine_limit: int = 24, seed: int | None = None, warmup_s: float = 20.0,
                   interval_s: float = 1.0, workers: int = 48, notes: Sequence[str] = ()) -> list[Path]:
    """Run ``workload`` through every variant at once; return the run folders.

    ``warmup_s`` (wall): before the measured run, each fleet gets ``warmup_s`` seconds of the
    trace's starting demand, unrecorded, so that every fleet starts the run settled there rather
    than at its configured replica counts."""
    arrivals = trace_arrivals(workload, dilation, seed)
    warmup = warmup_arrivals(arrivals, warmup_s)
    platforms: list[tuple[FleetVariant, LocalPlatform, Path]] = []
    try:
        for variant in variants:
            folder = out / variant.name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
            folder.mkdir(parents=True, exist_ok=True)
            fleet_path = folder / "fleet.yaml"
            fleet_path.write_text(variant.fleet_yaml(dilation, autoscaling, machine_limit, routing))
            print(f"  starting {variant.name} ({', '.join(variant.pools)}) ...", flush=True)
            platforms.append((variant, _start(fleet_path, folder / "platform", interval_s), folder))
        if warmup:
            print(f"  warm-up: {warmup_s:g} wall s at the trace's starting demand (not recorded) ...", flush=True)
            warm_at = time.time() + 1.0
            warmers = [threading.Thread(target=run_arrivals, args=(f"127.0.0.1:{p.ports.http}", warmup),
                                        kwargs={"workers": workers, "start_at_unix_s": warm_at}, daemon=True)
                       for _, p, _ in platforms]
            for t in warmers:
                t.start()
            for t in warmers:
                t.join()
        start_at = time.time() + 1.0
        stop = threading.Event()
        samplers = [threading.Thread(target=_sample, args=(p, folder / "timeline.jsonl", stop, 1.0), daemon=True)
                    for _, p, folder in platforms]
        results: dict[str, Any] = {}

        def drive(variant: FleetVariant, platform: LocalPlatform) -> None:
            results[variant.name] = run_arrivals(f"127.0.0.1:{platform.ports.http}", arrivals, seed=workload.seed,
                                                 workers=workers, start_at_unix_s=start_at)

        drivers = [threading.Thread(target=drive, args=(v, p), daemon=True) for v, p, _ in platforms]
        for t in samplers + drivers:
            t.start()
        wall = workload.duration_s * dilation
        print(f"  {len(arrivals)} arrivals per fleet over {wall:.0f} s of wall time ({workload.duration_s:.0f} s "
              f"of platform time at x{dilation:g}) ...", flush=True)
        for t in drivers:
            t.join()
        stop.set()
        for t in samplers:
            t.join(5)
        paths = []
        for variant, platform, folder in platforms:
            result = results[variant.name]
            with (folder / "records.jsonl").open("w") as f:
                for r in result.records:
                    f.write(r.to_json() + "\n")
            fleet = platform.fleet
            (folder / "run.json").write_text(json.dumps({
                "name": variant.name, "autoscaled": variant.autoscaled, "dilation": dilation,
                "started_unix_s": result.started_unix_s, "duration_s": workload.duration_s,
                "workload": workload.name, "seed": workload.seed if seed is None else seed,
                "arrivals": len(arrivals), "max_late_ms": result.max_late_ms, "warmup_wall_s": warmup_s,
                "pools": {p.name: {"accelerator": p.accelerator.value, "instance_type": p.instance_type,
                                   "price_per_hour_usd": p.price_per_hour_usd, "bounds": list(p.replica_bounds),
                                   "outputs": "synthetic" if p.outputs is EmulatedOutputs.SYNTHETIC else "real"}
                          for p in fleet.pools},
                "tier_bounds_ms": {n: t.p99_ms for n, t in fleet.tiers.tiers.items()},
                "target_compliance": {n: t.target_compliance for n, t in fleet.tiers.tiers.items()},
                "autoscaling": dict(autoscaling), "routing": dict(routing or {}), "notes": list(notes),
                "emulation": f"every pool emulated, synthetic outputs, time dilated x{dilation:g}",
            }, indent=1))
            paths.append(folder)
        return paths
    finally:
        stoppers = [threading.Thread(target=p.stop) for _, p, _ in platforms]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()


def load_base_fleet(dilation: float) -> Fleet:
    """The platform's profiles and prices in dilated time, every kind of pool (for planning)."""
    variant = FleetVariant("plan", {"cpu": (1, 1, 1), "gpu": (1, 1, 1), "inf2": (1, 1, 1)}, False)
    path = ROOT / "build" / "capacity-plan-fleet.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(variant.fleet_yaml(dilation, {}, 64))
    return load_fleet(path)
