"""How a release's candidate share composes with the routing weights of a route (pure).

Routing decides the pools of a (model, tier) route; a release decides the candidate's share of
that route.  They compose by multiplication, so the cheapest-pool choice still holds inside each
version: with routing ``{cpu: 60, gpu: 40}`` and the candidate at 5%, stable keeps
``cpu 60 x 95%`` and ``gpu 40 x 95%``, and the candidate gets 5% of the route spread over the pools
it runs on in proportion to routing's weights there (evenly when routing gives them none).

Weights come out as integers whose sum is ``route.total x 10,000`` (basis points), reduced by
their greatest common divisor: exact, no rounding of the stable side, and Envoy only needs the
ratio (weighted clusters without ``total_weight`` sum themselves).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import gcd

from router_lib.release import ReleaseBook
from router_lib.release_spec import BASIS_POINTS
from router_lib.routes import RouteKey, RouteWeights


@dataclass(frozen=True)
class VersionSplit:
    """The candidate's share of one route, and where it runs.  ``candidate_pools``: pools with
    candidate replicas (empty: the candidate has nowhere to run, its share stays with stable)."""

    key: RouteKey
    candidate_version: str
    candidate_bp: int
    candidate_pools: tuple[str, ...]
    mirror_bp: int = 0  # share of the route's requests mirrored to the comparator (shadow mode)

    def __post_init__(self) -> None:
        if type(self.candidate_bp) is not int or not 0 <= self.candidate_bp <= BASIS_POINTS:
            raise ValueError(f"split {self.key}: candidate_bp {self.candidate_bp!r} not an int in [0, {BASIS_POINTS}]")
        if type(self.mirror_bp) is not int or not 0 <= self.mirror_bp <= BASIS_POINTS:
            raise ValueError(f"split {self.key}: mirror_bp {self.mirror_bp!r} not an int in [0, {BASIS_POINTS}]")


@dataclass(frozen=True)
class VersionedWeight:
    pool: str
    version: str | None  # None: the stable version (the pool's own cluster)
    weight: int


def _spread(total: int, shares: list[int]) -> list[int]:
    """``total`` split over ``shares`` proportionally, largest remainder, ties to the first."""
    whole = sum(shares)
    if whole == 0:
        shares, whole = [1] * len(shares), len(shares)
    exact = [total * s / whole for s in shares]
    out = [int(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def compose(route: RouteWeights, split: VersionSplit | None) -> list[VersionedWeight]:
    """The route's weighted clusters with the release applied; zero weights are left out."""
    weights = [(p.pool, p.weight) for p in route.pools]
    if split is None or split.candidate_bp == 0 or not split.candidate_pools:
        return [VersionedWeight(pool, None, w) for pool, w in weights if w > 0]
    bp = split.candidate_bp
    total = sum(w for _, w in weights)
    out = [VersionedWeight(pool, None, w * (BASIS_POINTS - bp)) for pool, w in weights]
    routed = dict(weights)
    pools = list(split.candidate_pools)
    candidate = _spread(total * bp, [routed.get(p, 0) for p in pools])
    out.extend(VersionedWeight(p, split.candidate_version, w) for p, w in zip(pools, candidate, strict=True))
    out = [w for w in out if w.weight > 0]
    divisor = 0
    for w in out:
        divisor = gcd(divisor, w.weight)
    return [VersionedWeight(w.pool, w.version, w.weight // divisor) for w in out] if divisor > 1 else out


def candidate_share(composed: list[VersionedWeight]) -> float:
    """Fraction of the route's requests that go to a candidate cluster (for checks and tests)."""
    total = sum(w.weight for w in composed)
    return sum(w.weight for w in composed if w.version is not None) / total if total else 0.0


def release_splits(book: ReleaseBook, routes: Mapping[RouteKey, RouteWeights]) -> tuple[VersionSplit, ...]:
    """Each release's candidate share of each of its model's routes (by tier), over the pools
    that have candidate replicas (``spec.candidate_pools`` when given).  A rolled-back or aborted
    release keeps a 0 split: its candidate clusters stay defined (make before break: a route is
    never left naming a cluster that is being removed).

    Mirroring is tier-aware like the live share: a tier's requests are mirrored once the tier has
    joined the release (tier ``j`` at stage ``>= j``: bronze from the start, gold last), so a tier
    that has not joined pays not even the mirror's cost on its live path."""
    out = []
    for state in book.releases.values():
        spec = state.spec
        pools = sorted({e.pool for e in state.endpoints
                        if not spec.candidate_pools or e.pool in spec.candidate_pools})
        running = not state.phase.finished
        mirror = round(spec.mirror_percent * BASIS_POINTS / 100) if running else 0
        for j, (tier, bp) in enumerate(state.weights_bp().items()):
            key = RouteKey(spec.model, tier)
            if key in routes:
                joined = j <= state.stage
                out.append(VersionSplit(key, spec.candidate_version, bp if pools else 0, tuple(pools),
                                        mirror if joined else 0))
    return tuple(sorted(out, key=lambda s: s.key))
