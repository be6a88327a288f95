"""Load schedules: steady, step and burst, as pure functions of elapsed time (no locust import).

A schedule maps elapsed seconds to a *load multiplier* (1.0 = the base mix of ``mixed_tiers``,
``base_users`` users); the adapters turn it into locust's ``(users, spawn_rate)``.  Keeping the
schedule pure lets the report and tests know the intended load at any second without locust.

Settings come from the environment, so the same locustfile serves the demo, the benchmark and a
person at the web UI: ``LOAD_DURATION_S`` (default 90), ``LOAD_BASE_USERS`` (default 12),
``LOAD_STEP_FACTOR`` (2.0), ``LOAD_BURST_FACTOR`` (3.0), ``LOAD_BURST_EVERY_S`` (20),
``LOAD_BURST_ON_S`` (5).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """``kind``: steady | step | burst.  ``multiplier(t)`` is None once the run is over.

    - steady: 1.0 throughout.
    - step: 1.0 for the first third, ``step_factor`` for the second third, 1.0 again after (the
      rise must push traffic past the cheapest pool's room; the fall shows it coming back).
    - burst: 1.0 with ``burst_factor`` for ``burst_on_s`` every ``burst_every_s`` (first at
      ``burst_every_s``).
    - stairs: 1.0, 1.5, ``step_factor``, ``burst_factor`` for a quarter of the run each: one run that
      spans the load levels of the others (the platform benchmark calibrates its simulator on it and
      validates on the other shapes).
    """

    kind: str
    duration_s: float
    step_factor: float = 2.0
    burst_factor: float = 3.0
    burst_every_s: float = 20.0
    burst_on_s: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"LOAD_SHAPE must be one of {SHAPE_KINDS}, got {self.kind!r}")
        if self.duration_s <= 0:
            raise ValueError(f"LOAD_DURATION_S must be > 0, got {self.duration_s}")

    def multiplier(self, t_s: float) -> float | None:
        if t_s >= self.duration_s:
            return None
        if self.kind == "step":
            third = self.duration_s / 3.0
            return self.step_factor if third <= t_s < 2 * third else 1.0
        if self.kind == "burst":
            k = math.floor(t_s / self.burst_every_s)
            in_burst = k >= 1 and t_s - k * self.burst_every_s < self.burst_on_s
            return self.burst_factor if in_burst else 1.0
        if self.kind == "stairs":
            levels = (1.0, 1.5, self.step_factor, self.burst_factor)
            return levels[min(3, int(4 * t_s / self.duration_s))]
        return 1.0

    def changes(self) -> list[tuple[float, float]]:
        """(t_s, multiplier) at every change, starting at 0: for plots and reports."""
        out: list[tuple[float, float]] = []
        t = 0.0
        while t < self.duration_s:
            m = self.multiplier(t)
            if m is not None and (not out or out[-1][1] != m):
                out.append((t, m))
            t += 0.5
        return out


SHAPE_KINDS = ("steady", "step", "burst", "stairs")


def schedule_from_env(kind: str | None = None) -> Schedule:
    env = os.environ
    return Schedule(
        kind=kind or env.get("LOAD_SHAPE", "steady"),
        duration_s=float(env.get("LOAD_DURATION_S", "90")),
        step_factor=float(env.get("LOAD_STEP_FACTOR", "2.0")),
        burst_factor=float(env.get("LOAD_BURST_FACTOR", "3.0")),
        burst_every_s=float(env.get("LOAD_BURST_EVERY_S", "20")),
        burst_on_s=float(env.get("LOAD_BURST_ON_S", "5")),
    )


def base_users() -> int:
    return int(os.environ.get("LOAD_BASE_USERS", "12"))
