"""The small rules that shape a pool's raw target into its desired replicas, one function each.

In the order the decider applies them: the pool's bounds; the tier floor (never leave a
(model, tier) with no pool able to meet it); the scale-down window (a fall waits until the
window's highest target has fallen too); the step cap on a rise; the flap guard (no reversal
soon after a change); then, fleet-wide, the trims for the machine limit and the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from router_lib.capacity_signals import meets_tier
from router_lib.capacity_state import PoolMemory
from router_lib.capacity_types import CapacitySettings
from router_lib.domain import Fleet, PoolSpec
from router_lib.policy_types import PolicySettings


def clamp_to_bounds(value: int, pool: PoolSpec) -> int:
    low, high = pool.replica_bounds
    return min(max(value, low), high)


def remember_target(targets: tuple[tuple[float, int], ...], raw: int, now_s: float,
                    window_s: float) -> tuple[tuple[float, int], ...]:
    """The window's targets with ``raw`` seen at ``now_s``: older than the window dropped, and so
    is any target not above ``raw`` (it can never be the maximum again), so the first is the max."""
    oldest = now_s - window_s
    return (*((t, n) for t, n in targets if t > oldest and n > raw), (now_s, raw))


def stabilised(raw: int, previous: int, targets: tuple[tuple[float, int], ...]) -> int:
    """Desired after the scale-down window: a rise goes through at once; a fall only as far as
    the window's highest target allows (never above ``previous``: the window slows falls, it
    does not start replicas for a target that has passed)."""
    if raw >= previous:
        return raw
    window_max = max((n for _t, n in targets), default=raw)
    return max(raw, min(previous, window_max))


def step_up_limit(previous: int, settings: CapacitySettings) -> int:
    """Most replicas one pool may gain this tick."""
    return max(settings.max_step_up, math.ceil(settings.max_step_up_fraction * previous))


def flap_guard_age_s(memory: PoolMemory | None, direction: int, now_s: float, guard_s: float) -> float | None:
    """Seconds since the pool last changed the other way, when that is within the guard (the move
    is then a reversal to hold); None when the move may go ahead."""
    if memory is None or memory.changed_s is None or direction == 0 or memory.direction != -direction:
        return None
    age = now_s - memory.changed_s
    return age if age < guard_s else None


def tier_floor(fleet: Fleet, usable: Sequence[PoolSpec], values: Mapping[str, int], previous: Mapping[str, int],
               policy: PolicySettings) -> dict[str, str]:
    """Pools to keep at 1 replica, each with why: for every (model, tier) some usable pool could
    meet, at least one pool that meets it keeps a replica.  The keeper is a pool running now if
    there is one (no cold start, no drain), else the cheapest; strictest tiers are served first,
    so one keeper often covers the looser tiers too."""
    running = {name for name, n in values.items() if n > 0}
    kept: dict[str, str] = {}
    strictest_first = sorted(fleet.tiers.tiers.values(), key=lambda t: (t.p99_ms is None, t.p99_ms or 0.0, t.name))
    models = sorted({m for p in usable for m in p.models})
    for tier in strictest_first:
        for model in models:
            meeting = [p for p in usable if p.replica_bounds[1] >= 1 and meets_tier(fleet, p, model, tier, policy)]
            if not meeting or any(p.name in running for p in meeting):
                continue
            keeper = min(meeting, key=lambda p: (previous.get(p.name, 0) == 0, p.price_per_hour_usd, p.name))
            running.add(keeper.name)
            kept[keeper.name] = f"kept at 1 so {model}/{tier.name} keeps a pool that meets it"
    return kept


def trim(desired: Mapping[str, int], floors: Mapping[str, int], unit_cost: Mapping[str, float],
         over: Callable[[Mapping[str, int]], bool]) -> dict[str, int]:
    """Take replicas one at a time, from the pool with the highest ``unit_cost`` ($/h per req/s of
    useful capacity) still above its floor, until ``over`` is false or every pool is at its floor.
    Pools absent from ``floors`` are not touched."""
    out = dict(desired)
    while over(out):
        candidates = [name for name, floor in floors.items() if out[name] > floor]
        if not candidates:
            break
        worst = max(candidates, key=lambda name: (unit_cost[name], name))
        out[worst] -= 1
    return out
