"""Fleet files for tests: the shipped ``fleet.yaml`` copied elsewhere with some pools changed."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def fleet_copy(directory: Path, *, share_tiers: frozenset[str] = frozenset()) -> Path:
    """``fleet.yaml`` written to ``directory`` (its prices, tiers and profiles as absolute paths),
    with ``share_tiers: true`` on exactly the pools named in ``share_tiers``."""
    data = yaml.safe_load((ROOT / "fleet.yaml").read_text())
    for key in ("prices", "tiers", "profiles"):
        data[key] = str(ROOT / data[key])
    unknown = share_tiers - {p["name"] for p in data["pools"]}
    if unknown:
        raise ValueError(f"fleet.yaml has no pool {sorted(unknown)}")
    for pool in data["pools"]:
        pool["share_tiers"] = pool["name"] in share_tiers
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
