"""Timing of an emulated accelerator: how long one batch must take, and how late this machine was.

An emulated pool runs the real model on this machine's CPU, then waits until the profile's
service time for that batch size has passed since the batch started.  When the CPU alone takes
longer than the profile allows, the batch finishes late: that lag is returned here and exported as
a metric (``emulation_lag_ms_total``), never hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router_lib.domain import interpolate_latency_ms


@dataclass(frozen=True)
class ServiceTime:
    """Profile service time (p50 per batch size), interpolated as ``router_lib.domain.Profile`` does."""

    latency_ms_by_batch: Mapping[int, float]

    def ms(self, batch_size: int) -> float:
        return interpolate_latency_ms(self.latency_ms_by_batch, batch_size)


@dataclass(frozen=True)
class BatchTiming:
    target_ms: float
    compute_ms: float

    @property
    def wait_ms(self) -> float:
        """How long to hold the instance after computing, so the batch takes ``target_ms``."""
        return max(0.0, self.target_ms - self.compute_ms)

    @property
    def lag_ms(self) -> float:
        """How much later than the profile the batch finished (0 when this machine kept up)."""
        return max(0.0, self.compute_ms - self.target_ms)


def time_batch(service: ServiceTime, batch_size: int, compute_ms: float) -> BatchTiming:
    return BatchTiming(target_ms=service.ms(batch_size), compute_ms=compute_ms)
