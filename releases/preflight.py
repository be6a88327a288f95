"""The pre-flight gate: before a release sends the candidate any traffic, its profile on each pool it
will run on is diffed against the stable version's (``profiler.diff``); a regression beyond the
release's threshold stops the release there.

The profiles are what ``python -m profiler profile`` writes (one per model and accelerator); the
candidate's is measured on the candidate's artifact.  The threshold is the spec's
``p95_regression_pct`` (the profiler's default, 10%, when the spec has none): the same tolerance
the live judge applies, checked on the profile before any client is exposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from profiler.diff import DEFAULT_THRESHOLD, IncomparableProfiles, diff_profiles, render
from router_lib.config import ConfigError, load_profile
from router_lib.release_spec import ReleaseSpec


@dataclass(frozen=True)
class PreflightResult:
    passed: bool
    report: str


def preflight(spec: ReleaseSpec, pairs: list[tuple[Path, Path]]) -> PreflightResult:
    """``pairs``: (stable profile, candidate profile) per pool.  Fails on any regression, on a
    profile of another model, or on profiles that cannot be compared."""
    pct = spec.thresholds.p95_regression_pct
    threshold = pct / 100 if pct is not None else DEFAULT_THRESHOLD
    lines, passed = [], True
    for stable_path, candidate_path in pairs:
        try:
            stable, candidate = load_profile(stable_path), load_profile(candidate_path)
        except (ConfigError, OSError) as e:
            return PreflightResult(False, f"pre-flight: cannot read a profile: {e}")
        if stable.model != spec.model or candidate.model != spec.model:
            return PreflightResult(False, f"pre-flight: {stable_path} / {candidate_path} profile "
                                          f"{stable.model} / {candidate.model}, the release is of {spec.model}")
        try:
            diff = diff_profiles(stable, candidate, threshold)
        except IncomparableProfiles as e:
            return PreflightResult(False, f"pre-flight: {e}")
        lines.append(f"{candidate.accelerator.value}: {stable_path} -> {candidate_path}")
        lines.append(render(diff, threshold))
        passed = passed and not diff.regressions
    verdict = "passed" if passed else "FAILED: the release stops before any traffic"
    return PreflightResult(passed, "\n".join([*lines, f"pre-flight {verdict}"]))
