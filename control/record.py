"""The control plane's persisted record: every decider's state in one versioned JSON document.

A restarted control server with fresh state would push default weights to an Envoy that was
routing well; from this record it republishes exactly what was in force, then carries on.  One
record (not a file per decider) so that a shared store and a leader lease can sit behind the
``StateStore`` port and a new leader resumes all deciders from the same instant.

``version`` counts saves: a store that is shared can refuse a save whose version is not the next
one (compare-and-swap).  Format 1 files (weights only, written before this record existed) are
read and upgraded: nothing a previous server persisted is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.decide import DeciderStates
from router_lib.calibration import CalibrationState
from router_lib.capacity import CapacityState
from router_lib.cost_ledger import LedgerState
from router_lib.policy_types import PolicyState
from router_lib.release import ReleaseBook
from router_lib.routes import RouteKey, RouteWeights

FORMAT = 2


@dataclass(frozen=True)
class ControlRecord:
    """What is persisted.  ``routes``: the weights in force (published); ``desired``: replicas per
    pool the capacity decider asked for; ``capacity``: its state (windows, cached plan) as JSON;
    ``releases``: the release decider's state; ``drains``: operator drains; ``ledger``: the cost
    ledger as JSON; ``calibration``: the online calibration's sums.  ``capacity``, ``ledger`` and
    ``calibration`` move every tick: the loop saves them periodically,
    the rest whenever it changes."""

    version: int = 0
    routes: Mapping[RouteKey, RouteWeights] = field(default_factory=dict)
    desired: Mapping[str, int] = field(default_factory=dict)
    capacity: Mapping[str, Any] | None = None
    releases: Mapping[str, Any] = field(default_factory=dict)
    drains: frozenset[str] = frozenset()
    snapshot_version: str = ""
    saved_at_unix_s: float = 0.0
    ledger: Mapping[str, Any] | None = None  # the cost ledger (router_lib.cost_ledger), as JSON
    # the online calibration's learned sums (router_lib.calibration), as JSON; absent from records
    # written before it existed (read as None: the calibration starts from the offline profiles)
    calibration: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "routes": [r.to_json() for _, r in sorted(self.routes.items())],
            "desired": dict(sorted(self.desired.items())),
            "deciders": {"capacity": dict(self.capacity) if self.capacity is not None else None,
                         "releases": dict(self.releases)},
            "ledger": dict(self.ledger) if self.ledger is not None else None,
            **({"calibration": dict(self.calibration)} if self.calibration is not None else {}),
            "drains": sorted(self.drains),
            "snapshot_version": self.snapshot_version,
            "saved_at_unix_s": self.saved_at_unix_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> ControlRecord:
        fmt = data.get("format")
        if fmt not in (1, FORMAT):
            raise ValueError(f"{source}: state format {fmt!r}, expected {FORMAT} (or 1, upgraded on read)")
        routes: dict[RouteKey, RouteWeights] = {}
        for i, r in enumerate(data.get("routes", [])):
            try:
                route = RouteWeights.from_json(r)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(f"{source}: routes[{i}]: {type(e).__name__}: {e}") from None
            routes[route.key] = route
        deciders = data.get("deciders", {}) if fmt == FORMAT else {}
        try:
            desired = {str(p): int(n) for p, n in dict(data.get("desired", {})).items()}
            capacity = dict(deciders["capacity"]) if deciders.get("capacity") else None
            releases = dict(deciders.get("releases", {}))
            drains = frozenset(str(p) for p in data.get("drains", data.get("draining", [])))
            return cls(
                version=int(data.get("version", 0)),
                routes=routes,
                desired=desired,
                capacity=capacity,
                releases=releases,
                drains=drains,
                snapshot_version=str(data.get("snapshot_version", "")),
                saved_at_unix_s=float(data.get("saved_at_unix_s", 0.0)),
                ledger=dict(data["ledger"]) if data.get("ledger") else None,
                calibration=dict(data["calibration"]) if data.get("calibration") else None,
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {type(e).__name__}: {e}") from None

    def decider_states(self, now_s: float) -> DeciderStates:
        """Deciders' states to resume from: routing starts from the weights in force (no
        smoothed signals or demand history survive a restart: they are re-measured within a
        window), capacity from its saved windows and plan, releases as they were."""
        # The ledger runs on wall-clock time: the time the server was away is billed at the rate
        # last seen (the replicas kept running), on its first tick back.
        ledger = LedgerState.from_json(self.ledger) if self.ledger is not None else None
        capacity = CapacityState.from_json(self.capacity) if self.capacity is not None else None
        releases = ReleaseBook.from_json(self.releases, "state record: releases")
        calibration = (CalibrationState.from_json(self.calibration, "state record: calibration")
                       if self.calibration is not None else None)
        return DeciderStates(routing_state_from_routes(self.routes, now_s), capacity, releases, ledger, calibration)


def routing_state_from_routes(routes: Mapping[RouteKey, RouteWeights], now_s: float) -> PolicyState | None:
    """The routing policy's state that continues from ``routes``: the weights it steps from, and
    the pools holding weight counted as feasible (so hysteresis keeps them where they are)."""
    if not routes:
        return None
    return PolicyState(
        time_s=now_s,
        smoothed={},
        demand_per_s={},
        demand_history={},
        weights={key: r.as_dict() for key, r in routes.items()},
        feasible=frozenset((key.model, key.tier, p.pool) for key, r in routes.items() for p in r.pools if p.weight > 0),
    )
