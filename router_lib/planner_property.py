"""The never-worse property over random workload mixes: on every mix the heterogeneous fleet meets
the SLAs in simulation and costs no more than the cheapest single-kind fleet that meets them.

The comparison guarantees it by construction (``router_lib.compare``: the heterogeneous search
starts from every single-kind fleet); this checks the construction on mixes nobody tuned it on,
and re-simulates each heterogeneous fleet outside the search's cache, so a cached verdict or a
settings mix-up cannot pass for a result.

A mix (:func:`random_mix`) is drawn from a seed: each (model, tier) gets a stream with probability
0.7 (at least one stream in all), its base rate log-uniform in ``[rate_low_per_s, rate_high_per_s]``,
its pattern Poisson, bursty (2-4x for 3-8 s, off 10-40 s) or diurnal (+-20-90%, one period per
trace).  Used twice: fast, in the tests (small fleets built in code, short traces), and in full by
``python -m router_lib compare --sensitivity`` (the fleet's own profiles and prices).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from router_lib.compare import Comparison, compare
from router_lib.domain import Fleet
from router_lib.planner_search import SearchLimits, meets_targets
from router_lib.simulator import SimSettings, simulate
from router_lib.workload import Stream, Workload, make_trace

Progress = Callable[[str], None]
STREAM_PROBABILITY = 0.7


@dataclass(frozen=True)
class MixSpace:
    """Where random mixes come from: the models and tiers they use, the range of each stream's
    base rate (req/s) and the trace length."""

    models: tuple[str, ...]
    tiers: tuple[str, ...]
    rate_low_per_s: float
    rate_high_per_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if not self.models or not self.tiers:
            raise ValueError("a mix space needs at least one model and one tier")
        if not 0 < self.rate_low_per_s <= self.rate_high_per_s:
            raise ValueError(f"need 0 < rate_low_per_s <= rate_high_per_s, got {self.rate_low_per_s}, "
                             f"{self.rate_high_per_s}")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")


def random_mix(space: MixSpace, seed: int, name: str = "") -> Workload:
    """One mix drawn from ``seed`` (module docstring); the same seed gives the same mix."""
    rng = np.random.default_rng(seed)
    pairs = [(m, t) for m in space.models for t in space.tiers]
    chosen = [pair for pair in pairs if rng.random() < STREAM_PROBABILITY]
    if not chosen:
        chosen = [pairs[int(rng.integers(len(pairs)))]]
    streams = []
    low, high = math.log(space.rate_low_per_s), math.log(space.rate_high_per_s)
    for model, tier in chosen:
        rate = float(math.exp(rng.uniform(low, high)))
        pattern = str(rng.choice(["poisson", "bursty", "diurnal"]))
        streams.append(Stream(
            model=model, tier=tier, rate_per_s=round(rate, 1), pattern=pattern,
            burst_factor=round(float(rng.uniform(2.0, 4.0)), 2), burst_on_s=round(float(rng.uniform(3.0, 8.0)), 1),
            burst_off_s=round(float(rng.uniform(10.0, 40.0)), 1), amplitude=round(float(rng.uniform(0.2, 0.9)), 2),
            period_s=space.duration_s))
    described = ", ".join(f"{s.model}/{s.tier} {s.rate_per_s:g}/s {s.pattern}" for s in streams)
    return Workload(name or f"random-{seed}", described, space.duration_s, seed, tuple(streams))


@dataclass(frozen=True)
class MixCheck:
    """The property on one mix.  ``rechecked``: the heterogeneous fleet, simulated again outside
    the comparison, met every target (None when the comparison found no fleet meeting them)."""

    comparison: Comparison
    rechecked: bool | None
    seconds: float

    @property
    def holds(self) -> bool:
        return self.comparison.never_worse and self.rechecked is not False


def check_mix(workload: Workload, base: Fleet, *, settings: SimSettings | None = None,
              limits: SearchLimits | None = None) -> MixCheck:
    started = time.monotonic()
    settings = settings or SimSettings()
    comparison = compare(workload, base, settings=settings, limits=limits, holdout=False)
    het = comparison.heterogeneous
    rechecked: bool | None = None
    if het.fleet is not None and het.meets_sla and het.headroom is not None:
        from dataclasses import replace

        tuned = replace(settings, policy=replace(settings.policy, headroom=het.headroom))
        result = simulate(het.fleet, make_trace(workload), tuned, initial_demand=workload.mean_demand())
        rechecked = meets_targets(result, het.fleet)
    return MixCheck(comparison, rechecked, time.monotonic() - started)


def check_mixes(base: Fleet, space: MixSpace, seeds: Sequence[int], *, settings: SimSettings | None = None,
                limits: SearchLimits | None = None, progress: Progress | None = None) -> list[MixCheck]:
    """:func:`check_mix` on the mix of each seed."""
    out = []
    for i, seed in enumerate(seeds):
        check = check_mix(random_mix(space, seed), base, settings=settings, limits=limits)
        out.append(check)
        if progress:
            c = check.comparison
            best = c.best_single
            progress(f"  mix {i + 1}/{len(seeds)} (seed {seed}): heterogeneous ${c.heterogeneous.cost_per_hour_usd:.3f}/h"
                     f", best single {best.label + f' ${best.cost_per_hour_usd:.3f}/h' if best else 'none'}: "
                     f"{'holds' if check.holds else 'FAILS'} ({check.seconds:.1f} s)")
    return out
