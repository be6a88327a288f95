"""Release weights compose with routing weights: the cheapest-pool choice holds inside each version."""

from __future__ import annotations

import pytest

from router_lib.release_split import VersionedWeight, VersionSplit, candidate_share, compose
from router_lib.routes import RouteKey, RouteWeights

ROUTE = RouteWeights.of("m", "gold", {"cpu": 60, "gpu": 40, "inf2": 0})
KEY = RouteKey("m", "gold")


def test_no_release_is_the_route_itself() -> None:
    assert compose(ROUTE, None) == [VersionedWeight("cpu", None, 60), VersionedWeight("gpu", None, 40)]
    assert compose(ROUTE, VersionSplit(KEY, "2", 0, ("cpu",))) == compose(ROUTE, None)


def test_candidate_share_is_exact_and_follows_routing_over_the_candidates_pools() -> None:
    out = compose(ROUTE, VersionSplit(KEY, "2", 500, ("cpu", "gpu")))
    assert candidate_share(out) == pytest.approx(0.05)
    stable = {w.pool: w.weight for w in out if w.version is None}
    cand = {w.pool: w.weight for w in out if w.version == "2"}
    assert stable["cpu"] * 40 == stable["gpu"] * 60 and cand["cpu"] * 40 == cand["gpu"] * 60


def test_candidate_on_a_pool_routing_does_not_use_still_gets_its_share() -> None:
    out = compose(ROUTE, VersionSplit(KEY, "2", 100, ("inf2",)))
    assert candidate_share(out) == pytest.approx(0.01)
    assert {w.pool for w in out if w.version} == {"inf2"}


def test_full_promotion_leaves_no_stable_cluster_and_rollback_no_candidate() -> None:
    assert all(w.version == "2" for w in compose(ROUTE, VersionSplit(KEY, "2", 10_000, ("cpu",))))
    assert candidate_share(compose(ROUTE, VersionSplit(KEY, "2", 10_000, ("cpu",)))) == 1.0


def test_out_of_range_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="candidate_bp 10001"):
        VersionSplit(KEY, "2", 10_001, ("cpu",))
