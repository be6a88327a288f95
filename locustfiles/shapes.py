"""Locust ``LoadTestShape`` adapters over the pure schedules in ``schedule.py``."""

from __future__ import annotations

from locust import LoadTestShape

from locustfiles.schedule import base_users, schedule_from_env


class _ScheduledShape(LoadTestShape):
    abstract = True
    kind = "steady"

    def __init__(self) -> None:
        super().__init__()
        self.schedule = schedule_from_env(self.kind)
        self.users = base_users()

    def tick(self) -> tuple[int, float] | None:
        m = self.schedule.multiplier(self.get_run_time())
        if m is None:
            return None
        users = max(1, round(self.users * m))
        return users, float(users) * 10.0  # spawn at once: a step is a step


class SteadyShape(_ScheduledShape):
    """The base mix for the whole run."""

    abstract = False
    kind = "steady"


class StepShape(_ScheduledShape):
    """Base, then ``LOAD_STEP_FACTOR`` x base for the middle third, then base again."""

    abstract = False
    kind = "step"


class BurstShape(_ScheduledShape):
    """Base with ``LOAD_BURST_FACTOR`` x bursts of ``LOAD_BURST_ON_S`` every ``LOAD_BURST_EVERY_S``."""

    abstract = False
    kind = "burst"


class StairsShape(_ScheduledShape):
    """1, 1.5, ``LOAD_STEP_FACTOR`` and ``LOAD_BURST_FACTOR`` x base, a quarter of the run each."""

    abstract = False
    kind = "stairs"


SHAPES: dict[str, type[_ScheduledShape]] = {"steady": SteadyShape, "step": StepShape, "burst": BurstShape,
                                            "stairs": StairsShape}
