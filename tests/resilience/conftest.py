"""One shared-pool test bed for the resilience checks: real Triton replicas of emulated pools
(synthetic outputs, time dilated x10: service times and tier bounds alike), the ADS server and
Envoy, started once (about 10 s here) and stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.resilience.harness import Bed

# shared: one replica whose tiers share it through priority levels; fifo: the same pool with one
# queue (the comparison); pair: two replicas, for the hung replica.
POOLS = {"shared": 1, "fifo": 1, "pair": 2}


@pytest.fixture(scope="session")
def bed(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with Bed.running(POOLS, priorities={"shared": True}, artifacts=artifacts,
                     workdir=tmp_path_factory.mktemp("resilience")) as running:
        yield running
