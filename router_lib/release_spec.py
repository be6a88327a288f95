"""A release: one model moving from a stable version to a candidate version, as a checked value.

The spec is what an operator writes (``release.yaml``) and what the control server persists with
the release's state.  It is parsed and validated here, once, with errors that name the field
(``release.yaml: steps[2]: must be greater than the step before (25), got 20``); past this module
it is a trusted frozen value.  Pure: no I/O besides :func:`load_release_spec` reading the file.

Example::

    name: minilm-v2
    model: text_embedding
    stable: {version: "1"}
    candidate:
      version: "2"
      pools: [cpu]                  # where candidate replicas run (default: every pool)
    steps: [1, 5, 25, 50, 100]      # candidate share of each tier, percent (a first 0: shadow only)
    tiers: [bronze, silver, gold]   # order in which tiers join; each lags the one before by a step
    step: {min_time_s: 30, min_requests: 200}
    thresholds:
      p95_regression_pct: 20        # candidate p95 may exceed stable's (same pool) by this much ...
      p99_regression_pct: 30
      latency_slack_ms: 5           # ... plus this (a 1 ms stable is not regressed by 1.4 ms)
      mean_regression_pct: 50       # the fast guard: mean latency over the last fraction of a second
      max_error_rate: 0.01
      min_agreement: 0.99           # mirrored traffic: cosine (embeddings) / label agreement
      min_judge_requests: 10        # no verdict on fewer candidate requests than this
    shadow: {mirror_percent: 0}     # share of live traffic mirrored to the comparator
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_VERSION = re.compile(r"^[0-9]{1,9}$")  # Triton version directories are positive integers
DEFAULT_TIER_ORDER = ("bronze", "silver", "gold")
DEFAULT_STEPS = (1.0, 5.0, 25.0, 50.0, 100.0)
# Envoy weights are integers: candidate shares are kept in basis points (1/100 of a percent).
BASIS_POINTS = 10_000


class ReleaseSpecError(ValueError):
    """A release spec is wrong.  ``str()`` names the source and the field."""

    def __init__(self, source: str, where: str, message: str) -> None:
        self.source, self.where = source, where
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")


@dataclass(frozen=True)
class Thresholds:
    """Breaching any one rolls the release back (see ``router_lib.release``).  ``None``: not checked."""

    p95_regression_pct: float | None = 20.0
    p99_regression_pct: float | None = 30.0
    latency_slack_ms: float = 5.0
    mean_regression_pct: float | None = 50.0
    max_error_rate: float = 0.01
    min_agreement: float | None = None
    min_judge_requests: int = 10


@dataclass(frozen=True)
class StepRule:
    """A step is passed after ``min_time_s`` AND ``min_requests`` candidate requests without a
    breach (the low-traffic guard: a quiet hour does not promote a release nobody used)."""

    min_time_s: float = 30.0
    min_requests: int = 100


@dataclass(frozen=True)
class ReleaseSpec:
    name: str
    model: str
    stable_version: str
    candidate_version: str
    steps: tuple[float, ...] = DEFAULT_STEPS
    tiers: tuple[str, ...] = DEFAULT_TIER_ORDER
    step: StepRule = field(default_factory=StepRule)
    thresholds: Thresholds = field(default_factory=Thresholds)
    candidate_pools: tuple[str, ...] = ()  # () = every pool that serves the model
    mirror_percent: float = 0.0

    @property
    def steps_bp(self) -> tuple[int, ...]:
        return tuple(round(s * BASIS_POINTS / 100) for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        t = self.thresholds
        return {
            "name": self.name, "model": self.model,
            "stable": {"version": self.stable_version},
            "candidate": {"version": self.candidate_version, "pools": list(self.candidate_pools)},
            "steps": list(self.steps), "tiers": list(self.tiers),
            "step": {"min_time_s": self.step.min_time_s, "min_requests": self.step.min_requests},
            "thresholds": {
                "p95_regression_pct": t.p95_regression_pct, "p99_regression_pct": t.p99_regression_pct,
                "latency_slack_ms": t.latency_slack_ms, "mean_regression_pct": t.mean_regression_pct,
                "max_error_rate": t.max_error_rate, "min_agreement": t.min_agreement,
                "min_judge_requests": t.min_judge_requests,
            },
            "shadow": {"mirror_percent": self.mirror_percent},
        }


class _Fields:
    """Typed reads from one mapping; every error names ``source`` and the dotted field."""

    def __init__(self, source: str, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ReleaseSpecError(source, where or "(top level)", f"must be a mapping, got {type(data).__name__}")
        self.source, self.data, self.where = source, data, where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> ReleaseSpecError:
        return ReleaseSpecError(self.source, self.at(key), message)

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(str(k) for k in self.data if k not in allowed)
        if extra:
            raise ReleaseSpecError(self.source, self.where or "(top level)",
                                   f"unknown field(s) {extra}; expected some of {sorted(allowed)}")

    def sub(self, key: str) -> _Fields:
        return _Fields(self.source, self.data.get(key) if self.data.get(key) is not None else {}, self.at(key))

    def name(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not _NAME.match(value) or "--" in value:
            raise self.fail(key, f"required, {_NAME.pattern} without '--', got {value!r}")
        return value

    def version(self, key: str) -> str:
        value = self.data.get(key)
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _VERSION.match(text) or int(text) < 1:
            raise self.fail(key, f"required, a Triton model version (an integer >= 1), got {value!r}")
        return str(int(text))

    def number(self, key: str, default: float | None, *, low: float, high: float = math.inf,
               optional: bool = False) -> float | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            bound = f"between {low:g} and {high:g}" if math.isfinite(high) else f">= {low:g}"
            raise self.fail(key, f"must be a number {bound}{' or null' if optional else ''}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int, *, low: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(key, f"must be an integer >= {low}, got {value!r}")
        return value

    def names(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of names, got {type(value).__name__}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not _NAME.match(item) or "--" in item:
                raise self.fail(f"{key}[{i}]", f"must be a name ({_NAME.pattern}), got {item!r}")
            out.append(item)
        if len(set(out)) != len(out):
            raise self.fail(key, f"lists a name twice: {out}")
        return tuple(out)


def _steps(f: _Fields, shadow: bool) -> tuple[float, ...]:
    """Increasing percentages ending at 100; a first step of 0 is a shadow step (the candidate
    answers only mirrored requests), allowed when shadow mode is on."""
    raw = f.data.get("steps", list(DEFAULT_STEPS))
    if not isinstance(raw, list) or not raw:
        raise f.fail("steps", f"must be a non-empty list of percentages, got {raw!r}")
    out: list[float] = []
    for i, value in enumerate(raw):
        if i == 0 and value == 0 and not isinstance(value, bool):
            if not shadow:
                raise f.fail("steps[0]", "0 (a shadow step) needs shadow.mirror_percent > 0")
            out.append(0.0)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
            raise f.fail(f"steps[{i}]", f"must be a percentage in (0, 100], got {value!r}")
        if out and value <= out[-1]:
            raise f.fail(f"steps[{i}]", f"must be greater than the step before ({out[-1]:g}), got {value!r}")
        if round(value * BASIS_POINTS / 100) != value * BASIS_POINTS / 100:
            raise f.fail(f"steps[{i}]", f"at most two decimals (Envoy weights are integers), got {value!r}")
        out.append(float(value))
    if out[-1] != 100:
        raise f.fail("steps", f"must end at 100 (the candidate takes the whole route), ends at {out[-1]:g}")
    return tuple(out)


def parse_release_spec(data: Any, source: str = "release spec", *,
                       known_tiers: tuple[str, ...] | None = None) -> ReleaseSpec:
    """Check ``data`` (parsed YAML or JSON) and build the spec; ``ReleaseSpecError`` names the field.
    ``known_tiers``: the fleet's tiers; when given, ``tiers`` must list exactly those."""
    top = _Fields(source, data, "")
    top.unknown({"name", "model", "stable", "candidate", "steps", "tiers", "step", "thresholds", "shadow"})
    stable, candidate = top.sub("stable"), top.sub("candidate")
    if "stable" not in top.data:
        raise top.fail("stable", "required: {version: N}")
    if "candidate" not in top.data:
        raise top.fail("candidate", "required: {version: N, pools: [...]}")
    stable.unknown({"version"})
    candidate.unknown({"version", "pools"})
    stable_version, candidate_version = stable.version("version"), candidate.version("version")
    if stable_version == candidate_version:
        raise candidate.fail("version", f"must differ from the stable version ({stable_version})")
    tiers = top.names("tiers", _ordered(known_tiers) if known_tiers else DEFAULT_TIER_ORDER)
    if known_tiers is not None and set(tiers) != set(known_tiers):
        raise top.fail("tiers", f"must list every tier of the fleet exactly once ({sorted(known_tiers)}), got {list(tiers)}")
    if not tiers:
        raise top.fail("tiers", "must list at least one tier")
    rule, th, shadow = top.sub("step"), top.sub("thresholds"), top.sub("shadow")
    rule.unknown({"min_time_s", "min_requests"})
    th.unknown({"p95_regression_pct", "p99_regression_pct", "latency_slack_ms", "mean_regression_pct",
                "max_error_rate", "min_agreement", "min_judge_requests"})
    shadow.unknown({"mirror_percent"})
    d = Thresholds()
    thresholds = Thresholds(
        p95_regression_pct=th.number("p95_regression_pct", d.p95_regression_pct, low=0, optional=True),
        p99_regression_pct=th.number("p99_regression_pct", d.p99_regression_pct, low=0, optional=True),
        latency_slack_ms=th.number("latency_slack_ms", d.latency_slack_ms, low=0) or 0.0,
        mean_regression_pct=th.number("mean_regression_pct", d.mean_regression_pct, low=0, optional=True),
        max_error_rate=th.number("max_error_rate", d.max_error_rate, low=0, high=1) or 0.0,
        min_agreement=th.number("min_agreement", d.min_agreement, low=-1, high=1, optional=True),
        min_judge_requests=th.integer("min_judge_requests", d.min_judge_requests, low=1),
    )
    min_time = rule.number("min_time_s", StepRule().min_time_s, low=0)
    mirror = shadow.number("mirror_percent", 0.0, low=0, high=100) or 0.0
    return ReleaseSpec(
        name=top.name("name"),
        model=top.name("model"),
        stable_version=stable_version,
        candidate_version=candidate_version,
        steps=_steps(top, mirror > 0),
        tiers=tiers,
        step=StepRule(min_time_s=min_time if min_time is not None else 0.0,
                      min_requests=rule.integer("min_requests", StepRule().min_requests, low=0)),
        thresholds=thresholds,
        candidate_pools=candidate.names("pools", ()),
        mirror_percent=mirror,
    )


def _ordered(tiers: tuple[str, ...]) -> tuple[str, ...]:
    """The fleet's tiers, least demanding first (bronze, silver, gold), unknown names after."""
    rank = {t: i for i, t in enumerate(DEFAULT_TIER_ORDER)}
    return tuple(sorted(tiers, key=lambda t: (rank.get(t, len(rank)), t)))


def load_release_spec(path: Path | str, *, known_tiers: tuple[str, ...] | None = None) -> ReleaseSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ReleaseSpecError(str(path), "", f"cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ReleaseSpecError(str(path), "", f"not valid YAML: {e}") from None
    return parse_release_spec(data, str(path), known_tiers=known_tiers)
