"""What the control server remembers across restarts: the weights in force, pool health, and the
last published snapshot's version.

A restarted control server with fresh state would push default weights to an Envoy that was
routing well (FINDINGS); with this file it first republishes exactly what was in force, then
carries on ticking from there.  Written atomically (temp file + rename) after every change.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FORMAT = 1


@dataclass(frozen=True)
class PersistedState:
    # (model, tier) -> ((pool, weight), ...); reasons kept for /status after a restart
    weights: dict[tuple[str, str], tuple[tuple[str, int], ...]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    pool_health: dict[str, bool] = field(default_factory=dict)
    draining: tuple[str, ...] = ()
    snapshot_version: str = ""
    saved_at_unix_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "routes": [
                {"model": m, "tier": t, "weights": dict(w), "reasons": dict(self.reasons.get((m, t), ()))}
                for (m, t), w in sorted(self.weights.items())
            ],
            "pool_health": dict(sorted(self.pool_health.items())),
            "draining": sorted(self.draining),
            "snapshot_version": self.snapshot_version,
            "saved_at_unix_s": self.saved_at_unix_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> PersistedState:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{source}: state format {data.get('format')!r}, expected {STATE_FORMAT}")
        weights: dict[tuple[str, str], tuple[tuple[str, int], ...]] = {}
        reasons: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        for i, r in enumerate(data.get("routes", [])):
            try:
                key = (str(r["model"]), str(r["tier"]))
                weights[key] = tuple((str(p), int(w)) for p, w in r["weights"].items())
                reasons[key] = tuple((str(p), str(why)) for p, why in r.get("reasons", {}).items())
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(f"{source}: routes[{i}]: {type(e).__name__}: {e}") from None
        return cls(
            weights=weights,
            reasons=reasons,
            pool_health={str(k): bool(v) for k, v in data.get("pool_health", {}).items()},
            draining=tuple(str(p) for p in data.get("draining", [])),
            snapshot_version=str(data.get("snapshot_version", "")),
            saved_at_unix_s=float(data.get("saved_at_unix_s", 0.0)),
        )


def save_state(path: Path, state: PersistedState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_json(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> PersistedState | None:
    """The saved state, or None when there is none.  A corrupt file is an error, not a silent reset."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); move it away to start from defaults") from None
    return PersistedState.from_json(data, str(path))
