"""The release step decider, driven tick by tick with an injected clock (no processes, no sleep)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

from router_lib.release import (
    ActionKind,
    Command,
    Phase,
    PoolComparison,
    ReleaseBook,
    ReleaseCommandError,
    ReleaseObservation,
    ReleaseState,
    VersionWindow,
    apply_command,
    start_release,
    step_book,
    step_release,
    tier_weights_bp,
)
from router_lib.release_spec import Thresholds, parse_release_spec

SPEC = parse_release_spec({
    "name": "r", "model": "m", "stable": {"version": 1}, "candidate": {"version": 2},
    "steps": [10, 50, 100], "step": {"min_time_s": 10, "min_requests": 20},
    "thresholds": {"min_agreement": 0.98, "min_judge_requests": 10},
})
STABLE = VersionWindow(requests=100, errors=0, p95_ms=40, p99_ms=50, mean_ms=30)
GOOD = VersionWindow(requests=20, errors=0, p95_ms=42, p99_ms=55, mean_ms=31)


def obs(total: float, candidate: VersionWindow = GOOD, agreement: float | None = 1.0, samples: int = 20
        ) -> ReleaseObservation:
    return ReleaseObservation(total, (PoolComparison("cpu", STABLE, candidate),), agreement, samples)


@dataclass
class Drive:
    """A release driven by an injected clock: ``tick(dt, requests)`` advances time and the counter."""

    state: ReleaseState
    now: float = 1000.0
    total: float = 0.0

    def tick(self, dt: float, requests: float, candidate: VersionWindow = GOOD, **kw: object) -> list:
        self.now += dt
        self.total += requests
        self.state, actions = step_release(self.state, obs(self.total, candidate, **kw), self.now)  # type: ignore[arg-type]
        return actions


def started() -> Drive:
    state, actions = start_release(SPEC, 1000.0)
    assert [a.kind for a in actions] == [ActionKind.START]
    return Drive(state)


def test_tiers_join_in_order_each_one_step_behind() -> None:
    assert [tier_weights_bp(SPEC, s) for s in range(5)] == [
        {"bronze": 1000, "silver": 0, "gold": 0},
        {"bronze": 5000, "silver": 1000, "gold": 0},
        {"bronze": 10000, "silver": 5000, "gold": 1000},
        {"bronze": 10000, "silver": 10000, "gold": 5000},
        {"bronze": 10000, "silver": 10000, "gold": 10000},
    ]


def test_advances_when_time_and_requests_are_both_met() -> None:
    d = started()
    d.tick(0, 0)  # first observation: the counter's value at the stage start
    assert d.tick(5, 30) == [] and "5/10 s" in d.state.holding
    actions = d.tick(5, 0)
    assert [a.kind for a in actions] == [ActionKind.ADVANCE]
    assert d.state.stage == 1 and d.state.weights_bp()["silver"] == 1000


def test_holds_on_too_few_requests_however_long_it_waits() -> None:
    d = started()
    d.tick(0, 0)
    for _ in range(10):
        assert d.tick(60, 1) == []
    assert d.state.stage == 0 and "10/20 candidate requests" in d.state.holding


def test_a_good_candidate_is_promoted_after_the_last_tier_passes_the_last_step() -> None:
    d = started()
    d.tick(0, 0)
    kinds = []
    for _ in range(10):
        kinds += [a.kind for a in d.tick(10, 25)]
    assert kinds == [ActionKind.ADVANCE] * 4 + [ActionKind.PROMOTE]
    assert d.state.phase == Phase.PROMOTED
    assert set(d.state.weights_bp().values()) == {10000}
    assert d.tick(10, 25, VersionWindow(requests=50, errors=50)) == []  # finished: never changes again


BAD = {
    "error rate": VersionWindow(requests=20, errors=1, p95_ms=40, p99_ms=50, mean_ms=30),
    "p95": replace(GOOD, p95_ms=40 * 1.2 + 5 + 1),
    "p99": replace(GOOD, p99_ms=50 * 1.3 + 5 + 1),
    "mean latency": replace(GOOD, mean_ms=30 * 1.5 + 5 + 1),
}


@pytest.mark.parametrize("threshold", sorted(BAD))
def test_each_threshold_rolls_back_in_one_step(threshold: str) -> None:
    d = started()
    d.tick(0, 0)
    d.tick(10, 25)  # stage 1: bronze 50%, silver 10%
    actions = d.tick(1, 20, BAD[threshold])
    assert [a.kind for a in actions] == [ActionKind.ROLLBACK]
    assert d.state.phase == Phase.ROLLED_BACK and threshold in d.state.reason
    assert actions[0].weights_bp == {"bronze": 0, "silver": 0, "gold": 0}


@pytest.mark.parametrize(("name", "candidate"), [
    ("just within p95", replace(GOOD, p95_ms=40 * 1.2 + 5)),
    ("slack absorbs a small absolute change", VersionWindow(20, 0, 1.0, 1.0, 0.5)),
])
def test_within_the_thresholds_is_not_a_breach(name: str, candidate: VersionWindow) -> None:
    d = started()
    stable_fast = VersionWindow(100, 0, 0.4, 0.5, 0.2) if "slack" in name else STABLE
    d.state, actions = step_release(d.state, ReleaseObservation(0, (PoolComparison("cpu", stable_fast, candidate),)), 1001)
    assert actions == [] and d.state.phase == Phase.RUNNING


def test_disagreeing_outputs_roll_back() -> None:
    d = started()
    d.tick(0, 0)
    actions = d.tick(1, 5, agreement=0.7, samples=12)
    assert [a.kind for a in actions] == [ActionKind.ROLLBACK] and "output agreement 0.7000" in d.state.reason


def test_no_verdict_on_too_few_candidate_requests() -> None:
    d = started()
    d.tick(0, 0)
    few = VersionWindow(requests=3, errors=3, p95_ms=900, p99_ms=900, mean_ms=900)
    assert d.tick(1, 3, few, agreement=0.1, samples=3) == [] and d.state.phase == Phase.RUNNING


def test_pause_holds_the_step_but_still_rolls_back_and_resume_restarts_the_clock() -> None:
    d = started()
    d.tick(0, 0)
    d.state, actions = apply_command(d.state, Command.PAUSE, d.now)
    assert [a.kind for a in actions] == [ActionKind.PAUSE]
    assert d.tick(60, 100) == [] and d.state.stage == 0 and d.state.weights_bp()["bronze"] == 1000
    d.state, _ = apply_command(d.state, Command.RESUME, d.now)
    d.tick(0, 0)
    assert d.tick(9, 100) == []  # the clock restarted at resume: 9 s < 10 s
    assert [a.kind for a in d.tick(1, 0)] == [ActionKind.ADVANCE]
    d.state, _ = apply_command(d.state, Command.PAUSE, d.now)
    assert [a.kind for a in d.tick(1, 20, BAD["p95"])] == [ActionKind.ROLLBACK]


def test_manual_promote_and_abort_and_what_does_not_apply() -> None:
    d = started()
    promoted, _ = apply_command(d.state, Command.PROMOTE, d.now, "by alice")
    assert promoted.phase == Phase.PROMOTED and "by alice" in promoted.reason
    aborted, actions = apply_command(d.state, Command.ABORT, d.now)
    assert aborted.weights_bp() == {"bronze": 0, "silver": 0, "gold": 0} and actions[0].kind == ActionKind.ABORT
    with pytest.raises(ReleaseCommandError, match="not paused"):
        apply_command(d.state, Command.RESUME, d.now)
    with pytest.raises(ReleaseCommandError, match="is aborted: pause does not apply"):
        apply_command(aborted, Command.PAUSE, d.now)
    with pytest.raises(ReleaseCommandError, match="is promoted: resume does not apply"):
        apply_command(promoted, Command.RESUME, d.now)
    reverted, _ = apply_command(promoted, Command.ABORT, d.now, "revert")
    assert reverted.phase == Phase.ABORTED and set(reverted.weights_bp().values()) == {0}


def test_a_restart_mid_step_resumes_at_the_same_step_with_the_time_and_requests_already_spent() -> None:
    d = started()
    d.tick(0, 0)
    d.tick(10, 25)  # stage 1
    d.tick(6, 15)  # 6 s and 15 requests into stage 1
    weights = d.state.weights_bp()
    restored = ReleaseState.from_json(json.loads(json.dumps(d.state.to_json())))
    assert restored == d.state and restored.weights_bp() == weights
    assert weights == {"bronze": 5000, "silver": 1000, "gold": 0}  # neither 0% nor 100%
    after = Drive(restored, d.now, d.total)
    assert after.tick(3, 5) == []  # 9 s, 20 requests: not yet
    assert [a.kind for a in after.tick(1, 0)] == [ActionKind.ADVANCE]  # 10 s: the step counted across the restart


def test_a_reset_counter_restarts_the_request_count_instead_of_going_negative() -> None:
    d = started()
    d.tick(0, 100)
    d.total = 0  # Envoy restarted: its counters start again
    assert d.tick(10, 5) == [] and "5/20 candidate requests" in d.state.holding


def test_the_book_steps_every_unfinished_release_and_keeps_one_per_model() -> None:
    a, _ = start_release(SPEC, 0.0)
    other = replace(SPEC, name="r2", model="m2", thresholds=Thresholds())
    b, _ = start_release(other, 0.0)
    book = ReleaseBook().with_release(a).with_release(b)
    book, actions = step_book(book, {"r": obs(0, BAD["p99"])}, 1.0)
    assert [x.kind for x in actions] == [ActionKind.ROLLBACK]
    assert book.releases["r"].phase == Phase.ROLLED_BACK and book.releases["r2"].phase == Phase.RUNNING
    assert book.active_for("m") is None and book.active_for("m2") is not None
    again, _ = start_release(replace(SPEC, name="r3"), 2.0)
    assert set(book.with_release(again).releases) == {"r2", "r3"}  # the finished release of m is replaced
    assert ReleaseBook.from_json(json.loads(json.dumps(book.to_json()))) == book
