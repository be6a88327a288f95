"""The release step: a pure decider ``(state, observation, now) -> (state, actions)``.

One release moves one model's traffic from its stable version to a candidate version in steps
(``ReleaseSpec.steps``, percent of a tier's requests), tier by tier: the least demanding tier
goes first and each next tier lags the one before by one step, so gold joins only after bronze
and silver passed a step (``tier_weights_bp``).  A step is passed after ``min_time_s`` and
``min_requests`` candidate requests without a breach; after the last step of the last tier the
release is PROMOTED (candidate at 100% everywhere).  Any breach, at any time (paused included),
rolls it back: the candidate goes to 0% on every tier in the one publish that follows, and the
reason is recorded.

Time is wall-clock seconds (Unix) so that a persisted state resumes after a control-server
restart at the same step, with the time already spent in it counted: ``to_json`` / ``from_json``
carry everything, and nothing here reads a clock.  Candidate request counts arrive as a counter
(cumulative); the state keeps its value at the start of the step, so "requests in this step"
survives a restart too, and a counter that went backwards (Envoy restarted) restarts the count.

Why one verdict function (``breach``) for both paths: the control tick (1 s) and the fast guard
(every few tens of ms, see ``control.release_watch``) call the same ``step_release`` on their
observations, so a rule cannot hold on one path and not on the other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from router_lib.release_spec import BASIS_POINTS, ReleaseSpec, parse_release_spec

MAX_EVENTS = 64  # events kept in the state (the timeline in /status); older ones are dropped


class Phase(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"  # candidate at 100% on every tier; the operator retires the stable version
    ROLLED_BACK = "rolled_back"  # a threshold was breached: candidate at 0%
    ABORTED = "aborted"  # an operator stopped it: candidate at 0%

    @property
    def finished(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED)


class ActionKind(enum.StrEnum):
    START = "start"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


@dataclass(frozen=True)
class ReleaseAction:
    """What changed, for the data plane (``weights_bp``: candidate share per tier after it), the
    event log and the metrics.  Every action changes the release's phase or its weights."""

    kind: ActionKind
    release: str
    text: str
    weights_bp: Mapping[str, int]
    at_s: float
    model: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "release": self.release, "model": self.model, "text": self.text,
                "weights_pct": {t: bp / 100 for t, bp in self.weights_bp.items()}, "at_unix_s": self.at_s}


@dataclass(frozen=True)
class CandidateEndpoint:
    """One candidate replica (a Triton serving the candidate version), in the pool it runs in."""

    pool: str
    host: str
    http_port: int
    grpc_port: int
    metrics_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "host": self.host, "http_port": self.http_port,
                "grpc_port": self.grpc_port, "metrics_url": self.metrics_url}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CandidateEndpoint:
        return cls(str(data["pool"]), str(data["host"]), int(data["http_port"]), int(data["grpc_port"]),
                   str(data.get("metrics_url", "")))


@dataclass(frozen=True)
class VersionWindow:
    """One version on one pool over a recent window: requests finished, errors among them, and
    latency as clients see it (``None``: not measured in this window)."""

    requests: float = 0.0
    errors: float = 0.0
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None


@dataclass(frozen=True)
class PoolComparison:
    """Stable and candidate on the same pool: latency is compared here, never across pools (a
    candidate on a GPU is not "faster" than a stable on a CPU)."""

    pool: str
    stable: VersionWindow
    candidate: VersionWindow


@dataclass(frozen=True)
class ReleaseObservation:
    """What the release is judged on.  ``candidate_requests_total``: cumulative candidate requests
    (a counter, for the per-step minimum); ``pools``: the recent window per pool; ``agreement``:
    mean output agreement of mirrored requests in the window (cosine similarity or the share of
    equal labels), over ``agreement_samples`` comparisons."""

    candidate_requests_total: float = 0.0
    pools: tuple[PoolComparison, ...] = ()
    agreement: float | None = None
    agreement_samples: int = 0
    source: str = "tick"


@dataclass(frozen=True)
class ReleaseState:
    spec: ReleaseSpec
    phase: Phase
    stage: int
    stage_started_s: float
    started_s: float
    stage_requests_base: float | None = None  # candidate counter at the start of the stage
    reason: str = ""  # why the phase is what it is (a rollback's breach, an operator's command)
    holding: str = ""  # why the stage has not advanced yet
    endpoints: tuple[CandidateEndpoint, ...] = ()
    events: tuple[ReleaseAction, ...] = ()
    comparator: str = ""  # shadow mode: "host:http_port[:grpc_port]" of the comparator (comparator_address)

    @property
    def last_stage(self) -> int:
        return len(self.spec.steps) - 1 + len(self.spec.tiers) - 1

    def weights_bp(self) -> dict[str, int]:
        """The candidate's share of each tier, in basis points, as this state says."""
        if self.phase == Phase.PROMOTED:
            return {t: BASIS_POINTS for t in self.spec.tiers}
        if self.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
            return {t: 0 for t in self.spec.tiers}
        return tier_weights_bp(self.spec, self.stage)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json(), "phase": self.phase.value, "stage": self.stage,
            "stage_started_unix_s": self.stage_started_s, "started_unix_s": self.started_s,
            "stage_requests_base": self.stage_requests_base, "reason": self.reason, "holding": self.holding,
            "endpoints": [e.to_json() for e in self.endpoints],
            "events": [e.to_json() for e in self.events],
            "comparator": self.comparator,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "release state") -> ReleaseState:
        spec = parse_release_spec(data["spec"], f"{source}: spec")
        base = data.get("stage_requests_base")
        return cls(
            spec=spec, phase=Phase(data["phase"]), stage=int(data["stage"]),
            stage_started_s=float(data["stage_started_unix_s"]), started_s=float(data["started_unix_s"]),
            stage_requests_base=float(base) if base is not None else None,
            reason=str(data.get("reason", "")), holding=str(data.get("holding", "")),
            endpoints=tuple(CandidateEndpoint.from_json(e) for e in data.get("endpoints", [])),
            events=tuple(ReleaseAction(ActionKind(e["kind"]), str(e["release"]), str(e["text"]),
                                       {t: round(float(p) * 100) for t, p in dict(e["weights_pct"]).items()},
                                       float(e["at_unix_s"]), str(e.get("model", "")))
                        for e in data.get("events", [])),
            comparator=str(data.get("comparator", "")),
        )


@dataclass(frozen=True)
class ComparatorAddress:
    """Where a release's mirrored requests go: the comparator's HTTP port (KServe v2 REST, and its
    ``/metrics``) and, when it has one, its gRPC port (mirrored ``ModelInfer`` calls)."""

    host: str
    http_port: int
    grpc_port: int | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/metrics"


def comparator_address(text: str) -> ComparatorAddress:
    """Parse ``HOST:HTTP_PORT[:GRPC_PORT]`` (ValueError naming what is wrong)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not all(p.isdigit() and 0 < int(p) < 65536 for p in parts[1:]):
        raise ValueError(f"comparator must be HOST:HTTP_PORT[:GRPC_PORT] with ports 1-65535, got {text!r}")
    return ComparatorAddress(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None)


class ReleaseCommandError(ValueError):
    """An operator command that does not apply to the release's phase (the message says why)."""


def tier_weights_bp(spec: ReleaseSpec, stage: int) -> dict[str, int]:
    """Candidate share per tier at ``stage``: tier ``j`` (in ``spec.tiers`` order) is at step
    ``stage - j`` (0 before it joins, the last step once past the end)."""
    steps = spec.steps_bp
    out = {}
    for j, tier in enumerate(spec.tiers):
        k = stage - j
        out[tier] = 0 if k < 0 else steps[min(k, len(steps) - 1)]
    return out


def _pct(bp: Mapping[str, int]) -> str:
    return ", ".join(f"{t} {v / 100:g}%" for t, v in bp.items())


def _event(state: ReleaseState, kind: ActionKind, text: str, now_s: float) -> tuple[ReleaseState, ReleaseAction]:
    action = ReleaseAction(kind, state.spec.name, text, state.weights_bp(), now_s, state.spec.model)
    return replace(state, events=(*state.events, action)[-MAX_EVENTS:]), action


def start_release(spec: ReleaseSpec, now_s: float, endpoints: Sequence[CandidateEndpoint] = (),
                  comparator: str = "") -> tuple[ReleaseState, list[ReleaseAction]]:
    state = ReleaseState(spec, Phase.RUNNING, 0, now_s, now_s, endpoints=tuple(endpoints), comparator=comparator)
    state, action = _event(state, ActionKind.START, f"started: {_pct(state.weights_bp())}", now_s)
    return state, [action]


def _exceeds(candidate: float | None, stable: float | None, pct: float | None, slack_ms: float) -> bool:
    if pct is None or candidate is None or stable is None:
        return False
    return candidate > stable * (1 + pct / 100) + slack_ms


def breach(spec: ReleaseSpec, obs: ReleaseObservation) -> str | None:
    """The first threshold the observation breaches, as a sentence; None if none (or too few
    candidate requests in the window to judge: ``min_judge_requests``)."""
    th = spec.thresholds
    requests = sum(p.candidate.requests for p in obs.pools)
    errors = sum(p.candidate.errors for p in obs.pools)
    if requests >= th.min_judge_requests and errors / requests > th.max_error_rate:
        return (f"error rate {errors / requests:.1%} > {th.max_error_rate:.1%} "
                f"({errors:g} of {requests:g} candidate requests, {obs.source})")
    for p in obs.pools:
        if p.candidate.requests < th.min_judge_requests or p.stable.requests <= 0:
            continue
        for label, pct, cand, stab in (
            ("p99 latency", th.p99_regression_pct, p.candidate.p99_ms, p.stable.p99_ms),
            ("p95 latency", th.p95_regression_pct, p.candidate.p95_ms, p.stable.p95_ms),
            ("mean latency", th.mean_regression_pct, p.candidate.mean_ms, p.stable.mean_ms),
        ):
            if _exceeds(cand, stab, pct, th.latency_slack_ms):
                assert cand is not None and stab is not None and pct is not None
                return (f"{label} on {p.pool}: candidate {cand:.1f} ms vs stable {stab:.1f} ms "
                        f"(limit +{pct:g}% + {th.latency_slack_ms:g} ms, {obs.source})")
    if th.min_agreement is not None and obs.agreement is not None \
            and obs.agreement_samples >= th.min_judge_requests and obs.agreement < th.min_agreement:
        return (f"output agreement {obs.agreement:.4f} < {th.min_agreement:g} "
                f"over {obs.agreement_samples} mirrored requests ({obs.source})")
    return None


def step_release(state: ReleaseState, obs: ReleaseObservation | None, now_s: float
                 ) -> tuple[ReleaseState, list[ReleaseAction]]:
    """One decision.  Finished releases never change; a breach rolls back (paused or not); a
    running release advances one stage when the stage's time and requests are both met."""
    if state.phase.finished:
        return state, []
    if obs is None:
        return replace(state, holding="holding: no observation yet"), []
    why = breach(state.spec, obs)
    if why is not None:
        state = replace(state, phase=Phase.ROLLED_BACK, reason=why, holding="")
        state, action = _event(state, ActionKind.ROLLBACK, f"rolled back: {why}", now_s)
        return state, [action]
    total = obs.candidate_requests_total
    base = state.stage_requests_base
    if base is None or total < base:  # first observation of the stage, or the counter was reset
        base = 0.0 if base is not None else total
        state = replace(state, stage_requests_base=base)
    if state.phase == Phase.PAUSED:
        return replace(state, holding="paused by operator"), []
    rule = state.spec.step
    elapsed = now_s - state.stage_started_s
    seen = total - base
    if elapsed < rule.min_time_s or seen < rule.min_requests:
        waiting = []
        if elapsed < rule.min_time_s:
            waiting.append(f"{elapsed:.0f}/{rule.min_time_s:g} s")
        if seen < rule.min_requests:
            waiting.append(f"{seen:g}/{rule.min_requests} candidate requests")
        return replace(state, holding="holding: " + ", ".join(waiting)), []
    if state.stage >= state.last_stage:
        state = replace(state, phase=Phase.PROMOTED, reason="every tier passed every step", holding="")
        state, action = _event(state, ActionKind.PROMOTE, "promoted: candidate at 100% on every tier", now_s)
        return state, [action]
    state = replace(state, stage=state.stage + 1, stage_started_s=now_s, stage_requests_base=total, holding="")
    state, action = _event(state, ActionKind.ADVANCE, f"stage {state.stage}: {_pct(state.weights_bp())}", now_s)
    return state, [action]


class Command(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"


def apply_command(state: ReleaseState, command: Command, now_s: float, note: str = ""
                  ) -> tuple[ReleaseState, list[ReleaseAction]]:
    """An operator's command.  ``ReleaseCommandError`` when it does not apply (a finished release
    cannot be resumed; only a paused one can; a promoted one can only be aborted: a revert to the
    stable version, whose replicas still run).  Resume restarts the step's clock and request
    count: time spent paused does not count towards the step."""
    by = f" ({note})" if note else ""
    reverting = command == Command.ABORT and state.phase == Phase.PROMOTED
    if state.phase.finished and not reverting:
        raise ReleaseCommandError(f"release {state.spec.name} is {state.phase.value}: {command.value} does not apply")
    if command == Command.PAUSE:
        if state.phase == Phase.PAUSED:
            raise ReleaseCommandError(f"release {state.spec.name} is already paused")
        state = replace(state, phase=Phase.PAUSED, reason=f"paused by operator{by}", holding="paused by operator")
        kind, text = ActionKind.PAUSE, f"paused{by}"
    elif command == Command.RESUME:
        if state.phase != Phase.PAUSED:
            raise ReleaseCommandError(f"release {state.spec.name} is {state.phase.value}, not paused")
        state = replace(state, phase=Phase.RUNNING, reason="", stage_started_s=now_s, stage_requests_base=None,
                        holding="")
        kind, text = ActionKind.RESUME, f"resumed at stage {state.stage}{by}"
    elif command == Command.PROMOTE:
        state = replace(state, phase=Phase.PROMOTED, reason=f"promoted by operator{by}", holding="")
        kind, text = ActionKind.PROMOTE, f"promoted by operator: candidate at 100% on every tier{by}"
    else:
        state = replace(state, phase=Phase.ABORTED, reason=f"aborted by operator{by}", holding="")
        kind, text = ActionKind.ABORT, f"aborted by operator: candidate at 0%{by}"
    state, action = _event(state, kind, text, now_s)
    return state, [action]


@dataclass(frozen=True)
class ReleaseBook:
    """Every release the control server knows, by name (finished ones stay for ``/status`` until
    replaced by a new release of the same model).  At most one unfinished release per model."""

    releases: Mapping[str, ReleaseState] = field(default_factory=dict)

    def active_for(self, model: str) -> ReleaseState | None:
        for r in self.releases.values():
            if r.spec.model == model and not r.phase.finished:
                return r
        return None

    def with_release(self, state: ReleaseState) -> ReleaseBook:
        """Add or replace ``state``; a finished release of the same model is dropped."""
        keep = {n: r for n, r in self.releases.items() if r.spec.model != state.spec.model}
        return ReleaseBook({**keep, state.spec.name: state})

    def to_json(self) -> dict[str, Any]:
        return {name: r.to_json() for name, r in sorted(self.releases.items())}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "releases") -> ReleaseBook:
        return cls({str(n): ReleaseState.from_json(r, f"{source}.{n}") for n, r in data.items()})


def step_book(book: ReleaseBook, observations: Mapping[str, ReleaseObservation], now_s: float
              ) -> tuple[ReleaseBook, list[ReleaseAction]]:
    """``step_release`` for every unfinished release with an observation (by release name); a
    release without one keeps its state."""
    actions: list[ReleaseAction] = []
    out = dict(book.releases)
    for name, state in book.releases.items():
        if state.phase.finished or name not in observations:
            continue
        new, acted = step_release(state, observations.get(name), now_s)
        out[name] = new
        actions.extend(acted)
    return ReleaseBook(out), actions
