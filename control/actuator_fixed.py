"""Replica actuator for a fixed fleet (``control.ports.ReplicaActuator``).

The local supervisor runs the replica count each pool is configured with; nothing starts or
stops replicas on the control plane's request yet.  This actuator says so in every answer: a
request that differs from the configured count is reported as not applied, never as done.
"""

from __future__ import annotations

from collections.abc import Mapping

from control.ports import ActuationResult


class FixedFleetActuator:
    def __init__(self, configured: Mapping[str, int]) -> None:
        self.configured = dict(configured)

    def apply(self, desired: Mapping[str, int]) -> ActuationResult:
        applied = {pool: self.configured.get(pool) == n for pool, n in desired.items()}
        note = "" if all(applied.values()) else "fixed fleet: replica counts other than the configured ones are not applied"
        return ActuationResult(dict(desired), applied, note)
