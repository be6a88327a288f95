"""The one representation of a routing decision, from the policy to Envoy and to disk.

A route is keyed by :class:`RouteKey` ``(model, tier)``; its weights are a :class:`RouteWeights`
holding one :class:`PoolWeight` per pool, each with the :class:`Reason` the decider gave.  The
routing decider produces these, the release and capacity deciders adjust them, the xDS snapshot
builds Envoy's weighted clusters from them, and the state store writes them to disk: nobody
converts them into another shape on the way.

Reasons are typed (:class:`ReasonKind` plus free text for people) so code branches on the kind,
never on the text: a string compared by identity breaks as soon as one copy is rebuilt.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple


class RouteKey(NamedTuple):
    """One route: a model at one SLA tier.  Always ``(model, tier)``, in that order."""

    model: str
    tier: str

    def __str__(self) -> str:
        return f"{self.model}/{self.tier}"


class PoolModel(NamedTuple):
    """One model on one pool: the key of per-pool metrics and profiles.  ``(pool, model)``."""

    pool: str
    model: str


class ReasonKind(enum.StrEnum):
    """Why a pool holds the weight it holds on a route (what code may branch on)."""

    CHEAPEST = "cheapest"  # feasible, placed in cost order
    NOT_NEEDED = "not_needed"  # feasible or not assessed: cheaper pools cover the demand
    NO_REPLICA = "no_replica"  # 0 ready replicas
    MODEL_NOT_READY = "model_not_ready"
    ERROR_RATE = "error_rate"
    PREDICTED_OVER_BOUND = "predicted_over_bound"
    MEASURED_OVER_BOUND = "measured_over_bound"
    FALLBACK = "fallback"  # no pool meets the bound: fallback order
    NO_HEALTHY_POOL = "no_healthy_pool"
    STEPPING = "stepping"  # weight moving towards the target at most max_step per tick
    DRAINING = "draining"  # the capacity decider is emptying the pool (or an operator drained it)
    NOT_READY = "not_ready"  # the pool's replicas are starting: no traffic until ready
    REASSIGNED = "reassigned"  # the route's pools went away: first pool in fallback order takes it
    RESUMED = "resumed"  # republished from the persisted state after a restart

    @property
    def unhealthy(self) -> bool:
        return self in _UNHEALTHY


_UNHEALTHY = frozenset({ReasonKind.NO_REPLICA, ReasonKind.MODEL_NOT_READY, ReasonKind.ERROR_RATE})


@dataclass(frozen=True)
class Reason:
    """A typed reason with its human-readable text (``str(reason)`` is the text)."""

    kind: ReasonKind
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.kind.value

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "text": str(self)}

    @classmethod
    def from_json(cls, data: Any) -> Reason:
        if isinstance(data, str):  # state files written before reasons were typed
            return cls(ReasonKind.RESUMED, data)
        return cls(ReasonKind(data["kind"]), str(data.get("text", "")))


@dataclass(frozen=True)
class PoolWeight:
    """One pool's integer weight on a route, and why."""

    pool: str
    weight: int
    reason: Reason = Reason(ReasonKind.RESUMED)


@dataclass(frozen=True)
class RouteWeights:
    """Integer weights over pools for one route.

    Weights are ints >= 0; a pool with weight 0 gets no traffic (it still backs the others
    through Envoy's EDS priorities).  The sum is the settings' ``total_weight``, checked where the
    total is known (``xds_server.snapshot.Snapshot.consistent``), never all zero: Envoy NACKs that.
    """

    key: RouteKey
    pools: tuple[PoolWeight, ...]

    def __post_init__(self) -> None:
        # Built ~30 times per decision: one set and one type check per pool (``type(w) is int``
        # also refuses bools, which are ints to ``isinstance``).
        pools = self.pools
        if len({p.pool for p in pools}) != len(pools):
            raise ValueError(f"route {self.key}: a pool is listed twice: {[p.pool for p in pools]}")
        for p in pools:
            if type(p.weight) is not int or p.weight < 0:
                raise ValueError(f"route {self.key}: weight of {p.pool} is {p.weight!r}, not an int >= 0")

    @classmethod
    def of(cls, model: str, tier: str, weights: Mapping[str, int] | Iterable[tuple[str, int]],
           reasons: Mapping[str, Reason] | None = None) -> RouteWeights:
        """Build from (pool -> weight) pairs; pools without a reason get ``RESUMED``."""
        pairs = weights.items() if isinstance(weights, Mapping) else weights
        why = reasons or {}
        return cls(RouteKey(model, tier),
                   tuple(PoolWeight(p, w, why.get(p, Reason(ReasonKind.RESUMED))) for p, w in pairs))

    @property
    def model(self) -> str:
        return self.key.model

    @property
    def tier(self) -> str:
        return self.key.tier

    @property
    def weights(self) -> tuple[tuple[str, int], ...]:
        return tuple((p.pool, p.weight) for p in self.pools)

    def as_dict(self) -> dict[str, int]:
        return {p.pool: p.weight for p in self.pools}

    @property
    def total(self) -> int:
        return sum(p.weight for p in self.pools)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "tier": self.tier, "weights": self.as_dict(),
                "reasons": {p.pool: p.reason.to_json() for p in self.pools}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouteWeights:
        reasons = {str(p): Reason.from_json(r) for p, r in dict(data.get("reasons", {})).items()}
        return cls.of(str(data["model"]), str(data["tier"]),
                      [(str(p), int(w)) for p, w in dict(data["weights"]).items()], reasons)
