"""Properties of the policy over random fleets, signals and demand (hypothesis, modest budgets)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router_lib.domain import Accelerator, Fleet
from router_lib.latency_model import backlog_ms, predicted_p99_ms
from router_lib.policy import PolicyInputs, PolicySettings, decide
from tests.router_lib.builders import CPU, EMBED, GPU, INF, fleet, metrics, profile, tiers

ACCS = (CPU, GPU, INF)


@st.composite
def scenarios(draw: st.DrawFn, one_tier: bool = False) -> tuple[Fleet, dict[str, int], dict, dict]:
    n = draw(st.integers(1, 5))
    pools, profiles, ready, signals = [], {}, {}, {}
    for i in range(n):
        acc = ACCS[i % 3]
        name = f"p{i}"
        pools.append((name, acc, draw(st.floats(0.05, 5.0)), draw(st.integers(1, 4))))
        if acc not in profiles:
            lat1 = draw(st.floats(0.5, 60.0))
            profiles[acc] = profile(EMBED, acc, {1: lat1, 16: lat1 * draw(st.floats(1.0, 12.0))},
                                    instances=draw(st.integers(1, 2)), tail=draw(st.floats(1.0, 2.0)))
        ready[name] = draw(st.integers(0, 4))
        signals[(name, EMBED)] = {"queue_depth": draw(st.floats(0, 500)),
                                  "p99_ms": draw(st.one_of(st.none(), st.floats(1, 300)))}
    tier_set = tiers(gold=draw(st.floats(5, 200))) if one_tier else None
    f = fleet(pools, list(profiles.values()), tier_set)
    demand = {(EMBED, t): draw(st.floats(0, 5000)) for t in f.tiers.tiers}
    return f, ready, signals, demand


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.integers(2, 6))
def test_weights_are_non_negative_integers_with_a_fixed_total(scenario: tuple, ticks: int) -> None:
    f, ready, signals, demand = scenario
    state = None
    for tick in range(ticks):  # later ticks exercise smoothing and the bounded step
        d, state = decide(PolicyInputs(f, metrics(signals), ready, PolicySettings(), demand), state, float(tick))
        for route in d.routes.values():
            weights = [pw.weight for pw in route.pools]
            assert all(isinstance(w, int) and w >= 0 for w in weights)
            assert sum(weights) == 100
            assert {pw.pool for pw in route.pools} == {p.name for p in f.pools}


@settings(max_examples=60, deadline=None)
@given(scenarios(one_tier=True))
def test_a_pool_predicted_to_break_the_bound_gets_no_traffic_while_a_feasible_pool_has_room(scenario: tuple) -> None:
    f, ready, signals, demand = scenario
    s = PolicySettings(use_observed_p99=False)
    d, _ = decide(PolicyInputs(f, metrics(signals), ready, s, demand), None, 0.0)
    bound = f.tiers.tiers["gold"].p99_ms
    assert bound is not None

    def predicted(pool: str, acc: Accelerator) -> float:
        prof = f.profiles[(EMBED, acc)]
        return predicted_p99_ms(prof, 0.0, backlog_ms(prof, signals[(pool, EMBED)]["queue_depth"], ready[pool]))

    def breaks(pool: str, acc: Accelerator) -> bool:
        return predicted(pool, acc) > s.headroom * bound
    spec = {p.name: p for p in f.pools}
    # Feasible with a margin: the policy predicts at its (tiny) planned utilisation, not at 0, so a
    # pool exactly at headroom x bound when idle (a generated 4.0 ms against 4.0) is over it there.
    feasible = [n for n in spec if ready[n] > 0 and predicted(n, spec[n].accelerator) < s.headroom * bound * (1 - 1e-6)]
    if feasible:
        for pw in d.routes[(EMBED, "gold")].pools:
            if ready[pw.pool] == 0 or breaks(pw.pool, spec[pw.pool].accelerator):
                assert pw.weight == 0, pw


@settings(max_examples=60, deadline=None)
@given(scenarios(one_tier=True), st.data())
def test_raising_a_pools_price_never_raises_its_share(scenario: tuple, data: st.DataObject) -> None:
    f, ready, signals, demand = scenario
    victim = data.draw(st.sampled_from([p.name for p in f.pools]))
    factor = data.draw(st.floats(1.01, 20.0))
    pricier = fleet([(p.name, p.accelerator, p.price_per_hour_usd * (factor if p.name == victim else 1.0), p.replicas)
                     for p in f.pools], list(f.profiles.values()), f.tiers)
    before, _ = decide(PolicyInputs(f, metrics(signals), ready, PolicySettings(), demand), None, 0.0)
    after, _ = decide(PolicyInputs(pricier, metrics(signals), ready, PolicySettings(), demand), None, 0.0)
    assert after.weights(EMBED, "gold")[victim] <= before.weights(EMBED, "gold")[victim]
