"""Decision-time benchmark: ``decide()`` on a synthetic fleet of N models x 3 tiers x M pools.

Each tick gets fresh noisy metrics and demand (as a control loop would), and the state from the
previous tick; the first tick (which builds the capacity table) is reported separately.  Wall
time and the thread's CPU time are both reported: on a shared machine the wall time includes
waiting for a core, the CPU time is what ``decide()`` itself costs.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from typing import Any

from router_lib.domain import (
    Accelerator,
    Fleet,
    PoolMode,
    PoolSpec,
    Prices,
    Profile,
    Provenance,
    Tier,
    TierSet,
)
from router_lib.metrics import FleetMetrics, PoolModelMetrics
from router_lib.policy import PolicyInputs, PolicySettings, PolicyState, decide
from router_lib.routes import RouteKey

ACCS = (Accelerator.CPU, Accelerator.GPU, Accelerator.INFERENTIA)


def synthetic_fleet(models: int, pools: int, seed: int = 0) -> Fleet:
    rng = random.Random(seed)
    prov = Provenance(kind="reference", date="2026-11-28", source="synthetic", assumption="benchmark only")
    names = tuple(f"model_{i}" for i in range(models))
    profiles = {}
    for m in names:
        for acc in ACCS:
            lat1 = rng.uniform(1, 20)
            profiles[(m, acc)] = Profile(m, acc, f"{acc.value}.x", {1: lat1, 16: lat1 * rng.uniform(2, 10)},
                                         rng.choice((1, 2)), 16, prov, rng.uniform(1.05, 1.6))
    specs = tuple(PoolSpec(f"pool_{j}", ACCS[j % 3], f"{ACCS[j % 3].value}.x", rng.uniform(0.1, 2.0),
                           rng.randint(1, 8), PoolMode.EMULATED, models=names) for j in range(pools))
    tiers = TierSet({"gold": Tier("gold", 50.0, 0.999), "silver": Tier("silver", 150.0, 0.999),
                     "bronze": Tier("bronze", None)}, "silver", (Accelerator.GPU, Accelerator.INFERENTIA, Accelerator.CPU))
    prices = Prices({f"{a.value}.x": 1.0 for a in ACCS}, "synthetic", "2026-11-28", "none")
    return Fleet(specs, profiles, tiers, prices, names)


def model_capacity_per_s(fleet: Fleet, model: str, max_utilisation: float) -> float:
    """A model's share of the fleet's capacity if every model got an equal share of each pool."""
    total = 0.0
    for p in fleet.pools:
        profile = fleet.profiles[(model, p.accelerator)]
        total += p.replicas * profile.throughput_per_replica_per_s() * max_utilisation / len(fleet.models)
    return total


def calibration_ms(repeat: int = 20) -> float:
    """Median ms of a fixed pure-Python loop, timed next to the benchmark: on a shared machine,
    divide a result by this to compare runs (about 2-3 ms on an idle modern core)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        total = 0
        for i in range(100_000):
            total += i * i
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def run_benchmark(models: int = 10, pools: int = 10, ticks: int = 2000, seed: int = 0,
                  load: float = 0.5) -> dict[str, Any]:
    """Time ``decide()``; ``load`` is the fleet's offered load as a fraction of its capacity
    (each route's demand is drawn around ``load / tiers`` of its model's share, +-50%)."""
    fleet = synthetic_fleet(models, pools, seed)
    rng = random.Random(seed + 1)
    settings = PolicySettings()
    ready = {p.name: p.replicas for p in fleet.pools}
    n_tiers = len(fleet.tiers.tiers)
    per_route = {m: model_capacity_per_s(fleet, m, settings.max_utilisation) * load / n_tiers for m in fleet.models}
    inputs_per_tick = []
    for t in range(min(ticks, 200)):  # pre-built so the timing covers decide() only
        metrics = {(p.name, m): PoolModelMetrics(p.name, m, queue_depth=rng.uniform(0, 10),
                                                 request_rate_per_s=rng.uniform(0, 200), p99_ms=rng.uniform(2, 45))
                   for p in fleet.pools for m in fleet.models}
        demand = {RouteKey(m, tier): per_route[m] * rng.uniform(0.5, 1.5) for m in fleet.models for tier in fleet.tiers.tiers}
        inputs_per_tick.append(PolicyInputs(fleet, FleetMetrics(metrics, float(t)), ready, settings, demand))
    state: PolicyState | None = None
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    _, state = decide(inputs_per_tick[0], state, 0.0)
    first_ms = (time.perf_counter() - t0) * 1000
    times, cpu = [], []
    for t in range(1, ticks):
        inputs = inputs_per_tick[t % len(inputs_per_tick)]
        start, start_cpu = time.perf_counter(), time.thread_time()
        _, state = decide(inputs, state, float(t))
        cpu.append((time.thread_time() - start_cpu) * 1000)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    cpu.sort()
    calibration = calibration_ms()
    return {
        "shape": f"{models} models x {len(fleet.tiers.tiers)} tiers x {pools} pools",
        "offered_load": load,
        "ticks": ticks,
        "first_decision_ms": round(first_ms, 3),
        "min_ms": round(times[0], 3),  # the least disturbed tick: closest to an idle core
        "mean_ms": round(statistics.fmean(times), 3),
        "p50_ms": round(times[len(times) // 2], 3),
        "p99_ms": round(times[int(len(times) * 0.99)], 3),
        "max_ms": round(times[-1], 3),
        # CPU time of the deciding thread: what decide() costs, without waiting for a busy CPU
        "cpu_mean_ms": round(statistics.fmean(cpu), 3),
        "cpu_p50_ms": round(cpu[len(cpu) // 2], 3),
        "cpu_p99_ms": round(cpu[int(len(cpu) * 0.99)], 3),
        "target_ms": 1.0,
        "calibration_loop_ms": calibration,
        # other work on the machine while it ran (1-minute load average at its start and end)
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # machine-independent-ish: a decision costs this fraction of the calibration loop
        "p50_over_calibration": round(times[len(times) // 2] / calibration, 4),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
