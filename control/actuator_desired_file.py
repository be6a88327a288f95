"""Replica actuator for the local fleet (``control.ports.ReplicaActuator``): writes the desired
replica count per pool to a JSON file that the local platform's supervisor follows.

The file is the control-to-fleet half of the seam whose other half is the runtime file (fleet to
control): either process can restart without the other, and what is real is always what the
runtime file reports, never what was asked.  Written atomically, and only when the request changed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from control.ports import ActuationResult


def read_desired(path: Path) -> dict[str, int] | None:
    """The desired counts, or None when the file does not exist; ValueError naming the file if broken."""
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        return {str(pool): int(n) for pool, n in data["pools"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: 'pools' must map pool names to replica counts ({type(e).__name__}: {e})") from None


class DesiredFileActuator:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: dict[str, int] | None = None

    def apply(self, desired: Mapping[str, int]) -> ActuationResult:
        wanted = {pool: int(n) for pool, n in sorted(desired.items())}
        if wanted != self._written:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"pools": wanted, "updated_unix_s": time.time()}, f, indent=1)
            os.replace(tmp, self.path)
            self._written = wanted
        return ActuationResult(wanted, dict.fromkeys(wanted, True), f"requested in {self.path.name}")
