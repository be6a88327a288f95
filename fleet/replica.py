"""What the rest of the platform knows about one Triton replica.

Kept apart from the supervisor so that the control server (which only reads replica lists) does not
import the process layer, pytriton's binary or tritonclient.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaInfo:
    """What the rest of the platform needs to know about one running replica."""

    pool: str
    index: int
    accelerator: str
    emulated: bool
    http_port: int
    grpc_port: int
    metrics_port: int
    pid: int | None
    alive: bool
    restarts: int
    # ``ready``: passed Triton's readiness check (a replica still starting is alive, not ready).
    # ``terminating``: being scaled in: drained, then stopped (it must get no new requests).
    ready: bool = True
    terminating: bool = False

    @property
    def serving(self) -> bool:
        return self.alive and self.ready and not self.terminating

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"
