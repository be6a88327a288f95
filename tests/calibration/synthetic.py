"""Synthetic Triton statistics from a known service curve: what a replica's
``/v2/models/<m>/stats`` counters would say after executions drawn with log-normal noise."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from router_lib.calibration import StatsReading
from router_lib.calibration_stats import BatchCounters, ModelStats


def linear_curve(fixed_ms: float, per_item_ms: float) -> Callable[[int], float]:
    """Mean service time of one execution of a batch of ``b``: ``fixed + per_item * b``."""
    return lambda b: fixed_ms + per_item_ms * b


@dataclass
class FakeReplica:
    """Cumulative counters of one model on one replica; ``run`` executes batches with
    log-normal noise around ``curve(b)`` (its mean), ``restart`` zeroes them like a new process."""

    model: str
    curve: Callable[[int], float]
    sigma: float = 0.3  # log-normal shape of one execution's time
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    counters: dict[int, list[int]] = field(default_factory=dict)  # batch -> [executions, ns]
    requests: int = 0
    request_ns: int = 0

    def run(self, batch_size: int, executions: int, extra_ms: float = 0.0) -> None:
        c = self.counters.setdefault(batch_size, [0, 0])
        mu = math.log(self.curve(batch_size)) - self.sigma ** 2 / 2  # so that the mean is curve(b)
        for _ in range(executions):
            ms = self.rng.lognormvariate(mu, self.sigma) + extra_ms
            c[0] += 1
            c[1] += int(ms * 1e6)
            self.requests += batch_size
            self.request_ns += int((ms + 0.2) * 1e6) * batch_size  # 0.2 ms in Triton's queue
        self.counters = dict(sorted(self.counters.items()))

    def restart(self) -> None:
        self.counters, self.requests, self.request_ns = {}, 0, 0

    def stats(self) -> ModelStats:
        return ModelStats(self.model, {b: BatchCounters(n, ns) for b, (n, ns) in self.counters.items()},
                          self.requests, self.request_ns)


def reading(replicas: Mapping[tuple[str, str], FakeReplica]) -> StatsReading:
    return StatsReading({key: {r.model: r.stats()} for key, r in replicas.items()})
