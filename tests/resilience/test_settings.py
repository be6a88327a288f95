"""Unit tier: tiers -> Triton priority levels and queue policies, -> model configs, -> Envoy's
per-try timeouts, hedging, retry budget and admission filter.  No processes."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_repository.definitions import load_models
from model_repository.triton_config import (
    WAKE_LEVEL_PARAMETER,
    Target,
    TierSharing,
    accelerated_config,
    to_pbtxt,
    tokenizer_config,
)
from router_lib.domain import Tier, TierSet
from router_lib.priority import LevelPolicy, TierPriorities, largest_batch_within, tier_priorities
from xds_server import DataPlaneSettings, RetrySettings, build_snapshot
from xds_server.examples import three_pools, tiered_routes
from xds_server.inputs import OverloadSettings
from xds_server.naming import GRPC_LISTENER, HTTP_LISTENER, HTTP_ROUTES
from xds_server.overload import admission_filter, tier_resilience
from xds_server.protos import CLUSTER, LISTENER, ROUTE
from xds_server.routes import retry_policy, route_timeout

TIERS = TierSet({"gold": Tier("gold", 50.0), "silver": Tier("silver", 150.0), "bronze": Tier("bronze", None)},
                "silver", ())


def test_levels_follow_the_bounds_tightest_first_and_best_effort_last():
    p = tier_priorities(TIERS)
    assert p.by_tier() == {"gold": 1, "silver": 2, "bronze": 3}
    assert p.default_level == 2  # a request without priority is treated as the default tier
    gold, silver, bronze = (next(x for x in p.policies if x.tier == t) for t in ("gold", "silver", "bronze"))
    assert not gold.sheds  # gold is never shed by its own pool
    assert (silver.max_queue_size, silver.timeout_ms) == (0, 150.0)
    assert bronze.max_queue_size == 8 and bronze.timeout_ms == 1000.0


def test_a_bounded_tiers_queue_timeout_scales_with_its_bound():
    assert next(x for x in tier_priorities(TIERS, timeout_factor=0.75).policies if x.tier == "silver").timeout_ms == 112.5


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda: LevelPolicy("gold", 0), "level must be >= 1", id="level-zero"),
    pytest.param(lambda: LevelPolicy("gold", 1, -1), "max_queue_size", id="negative-queue"),
    pytest.param(lambda: LevelPolicy("gold", 1, 0, 0.0), "timeout_ms", id="zero-timeout"),
    pytest.param(lambda: TierPriorities((LevelPolicy("a", 1), LevelPolicy("b", 3)), 1), "no gaps", id="gap"),
    pytest.param(lambda: TierPriorities((LevelPolicy("a", 1), LevelPolicy("a", 2)), 1), "twice", id="tier-twice"),
    pytest.param(lambda: TierPriorities((LevelPolicy("a", 1),), 2), "default_level", id="default-out-of-range"),
    pytest.param(lambda: tier_priorities(TIERS, best_effort_max_queue=0), "best_effort_max_queue", id="zero-queue"),
    pytest.param(lambda: TierSharing(None, max_batch=0), "max_batch", id="zero-batch-cap"),
    pytest.param(lambda: RetrySettings(per_try_timeouts_ms=(("gold", 0.0),)), "per_try_timeouts_ms", id="zero-per-try"),
    pytest.param(lambda: RetrySettings(hedge_tiers=("gold",)), "hedging needs a per-try timeout", id="hedge-no-timeout"),
    pytest.param(lambda: RetrySettings(retry_budget_percent=0.0), "retry_budget_percent", id="zero-budget"),
    pytest.param(lambda: RetrySettings(route_timeout_floor_ms=-1.0), "route_timeout_floor_ms", id="negative-floor"),
    pytest.param(lambda: OverloadSettings(priority_levels=(("gold", 0),)), "1..127", id="level-out-of-range"),
    pytest.param(lambda: DataPlaneSettings(overload=OverloadSettings(priority_levels=(("platinum", 1),))),
                 "unknown tiers", id="unknown-tier-level"),
    pytest.param(lambda: DataPlaneSettings(retry=RetrySettings(per_try_timeouts_ms=(("platinum", 5.0),))),
                 "unknown tiers", id="unknown-tier-per-try"),
])
def test_bad_settings_are_refused_naming_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("bound_ms", "overhead_ms", "expected"), [
    (50.0, 8.0, 3), (50.0, 30.0, 1), (500.0, 0.0, 61), (1000.0, 0.0, 64), (10.0, 0.0, 1)])
def test_the_batch_cap_leaves_two_batches_and_the_overhead_within_the_bound(bound_ms, overhead_ms, expected):
    assert largest_batch_within(lambda b: 6.0 + 4.0 * b, bound_ms, 64, overhead_ms) == expected


def _config(sharing: TierSharing | None, model: str = "digits_classifier") -> mc.ModelConfig:
    return text_format.Parse(to_pbtxt(accelerated_config(load_models()[model], Target("cpu", sharing=sharing))),
                             mc.ModelConfig())


def test_a_shared_pools_model_config_declares_the_levels_policies_and_batch_cap():
    cfg = _config(TierSharing(tier_priorities(TIERS), max_batch=2))
    batching = cfg.dynamic_batching
    # the tiers' three levels, then the batcher wake-up level (fleet.batcher_wake)
    assert (batching.priority_levels, batching.default_priority_level) == (4, 2)
    wake = batching.priority_queue_policy[4]
    assert (wake.default_timeout_microseconds, wake.timeout_action, wake.max_queue_size) == (1, mc.ModelQueuePolicy.REJECT, 0)
    assert cfg.parameters[WAKE_LEVEL_PARAMETER].string_value == "4"
    assert list(batching.preferred_batch_size) == [2]
    gold, silver, bronze = (batching.priority_queue_policy[level] for level in (1, 2, 3))
    assert (gold.max_queue_size, gold.default_timeout_microseconds) == (0, 0)
    assert silver.default_timeout_microseconds == 150_000 and silver.timeout_action == mc.ModelQueuePolicy.REJECT
    assert (bronze.max_queue_size, bronze.default_timeout_microseconds) == (8, 1_000_000)
    assert not bronze.allow_timeout_override


def test_without_the_wake_level_only_the_tiers_levels_are_declared():
    cfg = _config(TierSharing(tier_priorities(TIERS), max_batch=2, wake_level=False))
    assert cfg.dynamic_batching.priority_levels == 3 and 4 not in cfg.dynamic_batching.priority_queue_policy
    assert WAKE_LEVEL_PARAMETER not in cfg.parameters


def test_without_sharing_the_model_config_is_unchanged():
    assert _config(None) == _config(TierSharing(None))
    assert not _config(None).dynamic_batching.priority_levels


def test_an_ensembles_host_step_is_one_fifo_queue_unless_asked_and_never_capped():
    model = load_models()["text_embedding"]
    from model_repository.triton_config import _shared

    sharing = TierSharing(tier_priorities(TIERS), max_batch=2)
    cfg = _shared(tokenizer_config(model), Target("cpu", sharing=sharing))
    assert cfg.dynamic_batching.priority_levels == 0 and not cfg.dynamic_batching.preferred_batch_size
    cfg = _shared(tokenizer_config(model), Target("cpu", sharing=dataclasses.replace(sharing, host_steps=True)))
    assert cfg.dynamic_batching.priority_levels == 4 and not cfg.dynamic_batching.preferred_batch_size


def _snapshot(settings: DataPlaneSettings):  # type: ignore[no-untyped-def]
    return build_snapshot(three_pools(), tiered_routes(), settings)


def test_defaults_change_nothing_no_per_try_timeout_no_budget_no_admission_filter():
    settings = DataPlaneSettings()
    assert "per_try_timeout" not in retry_policy(proto="http", settings=settings, tier="gold")
    assert route_timeout(settings, "gold") == "60s"
    assert admission_filter(settings) == []
    clusters = _snapshot(settings).resources[CLUSTER]
    assert all(not c.circuit_breakers.thresholds[0].HasField("retry_budget") for c in clusters.values())


def test_tier_resilience_gives_each_tier_a_per_try_timeout_from_its_bound_and_hedges_gold_only():
    settings = DataPlaneSettings(**tier_resilience(TIERS))
    routes = _snapshot(settings).resources[ROUTE][HTTP_ROUTES].virtual_hosts[0].routes
    by_name = {r.name: r for r in routes}
    some_model = next(n.split("/")[0] for n in by_name if n.endswith("/gold"))
    gold, silver, bronze = (by_name[f"{some_model}/{t}"].route for t in ("gold", "silver", "bronze"))
    assert gold.retry_policy.per_try_timeout.ToMilliseconds() == 50
    assert silver.retry_policy.per_try_timeout.ToMilliseconds() == 150
    assert bronze.retry_policy.per_try_timeout.ToMilliseconds() == 2000
    assert gold.hedge_policy.hedge_on_per_try_timeout and not silver.HasField("hedge_policy")
    assert gold.timeout.ToMilliseconds() == 1000  # 4 tries x 50 ms, raised to the floor: a hedged try may answer late
    assert bronze.timeout.ToMilliseconds() == 2000 * (settings.retry.num_retries + 1)
    default = by_name[f"{some_model}/default"].route  # no tier header: the default tier's
    assert default.retry_policy.per_try_timeout.ToMilliseconds() == 150
    budget = next(iter(_snapshot(settings).resources[CLUSTER].values())).circuit_breakers.thresholds[0].retry_budget
    assert (budget.budget_percent.value, budget.min_retry_concurrency.value) == (25.0, 64)


def test_with_shedding_both_listeners_run_the_admission_filter_before_the_router():
    settings = DataPlaneSettings(**tier_resilience(TIERS))
    assert settings.overload.priority_levels == (("bronze", 3), ("gold", 1), ("silver", 2))
    for name in (HTTP_LISTENER, GRPC_LISTENER):  # proxyless api_listeners have no Envoy filters
        text = str(_snapshot(settings).resources[LISTENER][name])
        assert "tmas.overload_admission" in text
        assert text.index("tmas.overload_admission") < text.index("envoy.filters.http.router")


def test_tier_sharing_caps_the_batch_from_the_profile_and_scales_the_best_effort_wait_with_dilation():
    from model_repository.triton_config import tier_sharing
    from router_lib.domain import Accelerator, Profile, Provenance

    profile = Profile("digits_classifier", Accelerator.GPU, "g5.xlarge", {1: 8.0, 2: 10.0, 64: 258.0}, 1, 64,
                      Provenance("reference", "2026-11-29", "test", "test"))
    sharing = tier_sharing(TIERS, profile, headroom_share=0.5, dilation=10.0)
    assert sharing.max_batch == 2  # 2 x t(2) = 20 <= 50 - 25 ms of headroom; 2 x t(3) = 28 is not
    assert sharing.priorities is not None
    bronze = next(p for p in sharing.priorities.policies if p.tier == "bronze")
    assert bronze.timeout_ms == 10_000.0
    assert tier_sharing(TIERS, profile).max_batch == 4  # 2 x t(4) = 36 <= 50 - 10; 2 x t(5) = 44 is not
    with pytest.raises(ValueError, match="headroom_share"):
        tier_sharing(TIERS, profile, headroom_share=1.0)
