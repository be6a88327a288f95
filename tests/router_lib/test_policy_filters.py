"""The policy's filters as tables: health, SLA feasibility (with hysteresis), tier isolation.

THREE_POOLS (tests/router_lib/builders.py), model ``embed``, gold bound 50 ms, headroom 0.8, so a
pool is excluded above a predicted 40 ms.  The inf pool: 1 replica, X = 2667 req/s, 2.4 ms
predicted when idle (tail 1.2 x 2 ms), so each request queued on it adds 0.375 ms.  The cpu pool:
36 ms idle (tail 1.2 x 30 ms), twice that from half its batch-1 throughput on.
"""

from __future__ import annotations

import dataclasses

import pytest

from router_lib.metrics import PoolModelMetrics
from router_lib.policy import PolicySettings
from router_lib.policy_candidates import RouteCandidate
from router_lib.policy_filters import FILTERS, HealthFilter, SlaFilter, TierIsolation
from router_lib.policy_stages import build_capacity_table
from router_lib.policy_types import Smoothed
from router_lib.routes import PoolModel, ReasonKind, RouteKey
from tests.router_lib.builders import EMBED, THREE_POOLS, metrics

TABLE = build_capacity_table(THREE_POOLS, PolicySettings())
READY = {"cpu": 2, "gpu": 1, "inf": 1}
READY_BY_INDEX = [READY[p.name] for p in THREE_POOLS.pools]
METRIC_FIELDS = {f.name for f in dataclasses.fields(PoolModelMetrics)} - {"pool", "model"}


def candidate(pool: str, tier: str = "gold") -> RouteCandidate:
    return next(c for c in TABLE.ranked[RouteKey(EMBED, tier)] if c.name == pool)


def queue_for_predicted_ms(predicted_ms: float) -> float:
    """Requests queued on the idle inf pool that bring its prediction to ``predicted_ms``."""
    return (predicted_ms - 2.4) / 1000.0 * 2666.6666666666665


@pytest.mark.parametrize(("ready", "signals", "expected"), [
    (READY, None, None),
    ({**READY, "inf": 0}, None, ReasonKind.NO_REPLICA),
    (READY, {"ready": False}, ReasonKind.MODEL_NOT_READY),
    (READY, {"error_rate": 0.9}, ReasonKind.ERROR_RATE),
    (READY, {"error_rate": 0.5}, None),
    ({**READY, "inf": 0}, {"error_rate": 0.9}, ReasonKind.NO_REPLICA),
], ids=["healthy", "no-ready-replica", "model-not-ready", "error-rate-over-the-limit",
        "error-rate-at-the-limit-is-healthy", "no-replica-says-so-first"])
def test_health_filter(ready: dict[str, int], signals: dict[str, object] | None,
                       expected: ReasonKind | None) -> None:
    unhealthy = HealthFilter(max_error_rate=0.5).unhealthy(
        TABLE.pool_models, metrics({("inf", EMBED): signals} if signals else None), ready)
    why = unhealthy.get(PoolModel("inf", EMBED))
    assert (why.kind if why else None) is expected
    assert why is None or str(why).startswith("unhealthy: ")


@pytest.mark.parametrize(("pool", "tier", "signals", "utilisation", "was_feasible", "settings", "expected"), [
    ("inf", "gold", None, 0.0, None, PolicySettings(), None),
    ("inf", "gold", Smoothed(2000.0, None), 0.0, None, PolicySettings(), ReasonKind.PREDICTED_OVER_BOUND),
    ("cpu", "gold", None, 0.5, None, PolicySettings(), ReasonKind.PREDICTED_OVER_BOUND),
    ("inf", "gold", Smoothed(0.0, 80.0), 0.0, None, PolicySettings(), ReasonKind.MEASURED_OVER_BOUND),
    ("inf", "gold", Smoothed(0.0, 80.0), 0.0, None, PolicySettings(use_observed_p99=False), None),
    ("inf", "gold", Smoothed(0.0, None, 60.0), 0.0, None, PolicySettings(), ReasonKind.PREDICTED_OVER_BOUND),
    ("inf", "gold", Smoothed(0.0, None, 3.0), 0.0, None, PolicySettings(), None),
    ("inf", "gold", Smoothed(queue_for_predicted_ms(41.0), None), 0.0, None, PolicySettings(),
     ReasonKind.PREDICTED_OVER_BOUND),
    ("inf", "gold", Smoothed(queue_for_predicted_ms(41.0), None), 0.0, True, PolicySettings(), None),
    ("inf", "gold", Smoothed(queue_for_predicted_ms(38.0), None), 0.0, None, PolicySettings(), None),
    ("inf", "gold", Smoothed(queue_for_predicted_ms(38.0), None), 0.0, False, PolicySettings(),
     ReasonKind.PREDICTED_OVER_BOUND),
    ("inf", "gold", Smoothed(0.0, 52.0), 0.0, True, PolicySettings(), None),
    ("inf", "bronze", Smoothed(2000.0, 900.0), 0.0, None, PolicySettings(), None),
], ids=["idle-pool-fits", "deep-queue-breaks-the-bound", "planned-utilisation-breaks-the-bound",
        "measured-p99-over-the-bound", "measured-p99-ignored-when-disabled", "emulation-lag-breaks-the-bound",
        "small-lag-tolerated", "just-over-the-threshold-is-out-with-no-history",
        "a-feasible-pool-keeps-its-place-up-to-1.1x", "just-under-the-threshold-is-in-with-no-history",
        "an-excluded-pool-returns-only-under-0.9x", "measured-p99-also-has-hysteresis", "bronze-has-no-bound"])
def test_sla_filter(pool: str, tier: str, signals: Smoothed | None, utilisation: float, was_feasible: bool | None,
                    settings: PolicySettings, expected: ReasonKind | None) -> None:
    smoothed = {PoolModel(pool, EMBED): signals} if signals else {}
    sla = SlaFilter(settings, smoothed, READY_BY_INDEX)
    predicted, why = sla.check(candidate(pool, tier), THREE_POOLS.tiers.tiers[tier].p99_ms, utilisation,
                               was_feasible)
    assert (why.kind if why else None) is expected, why
    assert predicted >= candidate(pool, tier).tail_latency_ms[1]  # never below one idle execution


def test_the_sla_filter_predicts_with_the_latency_model_plus_the_queue_drain_time() -> None:
    sla = SlaFilter(PolicySettings(), {PoolModel("inf", EMBED): Smoothed(100.0, None)}, READY_BY_INDEX)
    predicted, _ = sla.check(candidate("inf"), 50.0, 0.0, None)
    assert predicted == pytest.approx(2.4 + 100.0 / 2666.6666666666665 * 1000.0)


@pytest.mark.parametrize(("protected", "expected"), [
    (frozenset(), ["inf", "cpu", "gpu"]),
    (frozenset({"inf"}), ["cpu", "gpu", "inf"]),
    (frozenset({"inf", "gpu"}), ["cpu", "inf", "gpu"]),
    (frozenset({"inf", "cpu", "gpu"}), ["inf", "cpu", "gpu"]),
], ids=["nothing-protected-keeps-the-rank", "a-gold-pool-goes-last", "each-group-keeps-its-rank",
        "all-protected-keeps-the-rank"])
def test_tier_isolation_tries_pools_without_stricter_traffic_first(protected: frozenset[str],
                                                                  expected: list[str]) -> None:
    ranked = TABLE.ranked[RouteKey(EMBED, "bronze")]
    assert [c.name for c in TierIsolation.order(ranked, protected)] == expected


@pytest.mark.parametrize("stage", FILTERS, ids=[f.name for f in FILTERS])
def test_every_filter_declares_only_fields_of_pool_model_metrics(stage: type) -> None:
    assert stage.consumes <= METRIC_FIELDS  # type: ignore[attr-defined]
