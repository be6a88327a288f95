"""Compare two profiles of the same (model, accelerator) and flag regressions.

``python -m profiler diff BASELINE.yaml CANDIDATE.yaml`` exits 0 when the candidate is no worse,
1 on a regression, 2 when the two cannot be compared.  Canaries run it on a fresh measurement
against the profile in ``profiles/``.

What counts as a regression (each relative to the baseline, threshold ``t``, default 10%):
latency at any batch size either profile measured (the other's value interpolated as the router
would) up by more than ``t``; the tail factor ``p99_over_p50`` up by more than ``t``; full-batch
throughput per replica down by more than ``t``.  Improvements and changed settings (instances,
max batch, artifact) are reported but never fail.  The default is above this machine's run-to-run
noise on the shared cores (see docs/profiler.md); canaries on dedicated hosts may tighten it.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lib.domain import Profile

DEFAULT_THRESHOLD = 0.10


@dataclass(frozen=True)
class Change:
    metric: str
    baseline: float
    candidate: float
    higher_is_worse: bool
    regression: bool

    @property
    def relative(self) -> float:
        return (self.candidate - self.baseline) / self.baseline if self.baseline else 0.0

    def line(self) -> str:
        mark = "REGRESSION" if self.regression else "ok"
        return f"{mark:10} {self.metric:32} {self.baseline:10.3f} -> {self.candidate:10.3f} ({self.relative:+.1%})"


@dataclass(frozen=True)
class ProfileDiff:
    changes: tuple[Change, ...]
    notes: tuple[str, ...]

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regression)


class IncomparableProfiles(ValueError):
    pass


def _change(metric: str, base: float, cand: float, higher_is_worse: bool, threshold: float) -> Change:
    worse = (cand - base) / base if higher_is_worse else (base - cand) / base
    return Change(metric, base, cand, higher_is_worse, worse > threshold)


def diff_profiles(baseline: Profile, candidate: Profile, threshold: float = DEFAULT_THRESHOLD) -> ProfileDiff:
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if (baseline.model, baseline.accelerator) != (candidate.model, candidate.accelerator):
        raise IncomparableProfiles(
            f"different (model, accelerator): {baseline.model}/{baseline.accelerator.value} vs "
            f"{candidate.model}/{candidate.accelerator.value}")
    changes = []
    for b in sorted(set(baseline.latency_ms_by_batch) | set(candidate.latency_ms_by_batch)):
        if b > min(baseline.max_batch_size, candidate.max_batch_size):
            continue
        changes.append(_change(f"latency_ms[batch {b}]", baseline.latency_ms(b), candidate.latency_ms(b), True, threshold))
    changes.append(_change("p99_over_p50", baseline.p99_over_p50, candidate.p99_over_p50, True, threshold))
    changes.append(_change("throughput_per_replica_per_s", baseline.throughput_per_replica_per_s(),
                           candidate.throughput_per_replica_per_s(), False, threshold))
    notes = []
    for field in ("instance_type", "instances_per_replica", "max_batch_size"):
        a, b = getattr(baseline, field), getattr(candidate, field)
        if a != b:
            notes.append(f"{field} changed: {a} -> {b}")
    pa, pb = baseline.provenance, candidate.provenance
    for field in ("artifact_sha256", "triton_version", "model_version", "machine"):
        a, b = getattr(pa, field), getattr(pb, field)
        if a != b:
            notes.append(f"provenance.{field} changed: {a or '(none)'} -> {b or '(none)'}")
    return ProfileDiff(tuple(changes), tuple(notes))


def render(diff: ProfileDiff, threshold: float) -> str:
    lines = [c.line() for c in diff.changes] + [f"note: {n}" for n in diff.notes]
    n = len(diff.regressions)
    lines.append(f"{n} regression(s) beyond {threshold:.0%}" if n else f"no regression beyond {threshold:.0%}")
    return "\n".join(lines)
