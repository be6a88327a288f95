"""The runtime file: where the fleet's replicas listen right now.

The supervisor rewrites it (atomically) on every change of a replica set; the control server
reads it each tick.  It is the seam between the process layer and the control plane, so either
can restart without the other.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fleet.replica import ReplicaInfo


def write_runtime(path: Path, replicas: Mapping[str, Sequence[ReplicaInfo]], extra: Mapping[str, Any] | None = None) -> None:
    data = {
        "updated_unix_s": time.time(),
        "pools": {pool: [asdict(r) for r in infos] for pool, infos in sorted(replicas.items())},
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def read_runtime(path: Path) -> tuple[dict[str, list[ReplicaInfo]], dict[str, Any]]:
    """-> (replicas by pool, the whole document).  Raises FileNotFoundError / ValueError."""
    data = json.loads(path.read_text())
    try:
        pools = {pool: [ReplicaInfo(**r) for r in infos] for pool, infos in data["pools"].items()}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed runtime file: {e}") from None
    return pools, data
