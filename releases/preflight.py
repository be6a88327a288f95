"""The pre-flight gate: before a release sends the candidate any traffic, its profile on each pool it
will run on is diffed against the stable version's (``profiler.diff``); a regression beyond the
release's threshold stops the release there.

Two ways to get the profiles:

* **measured** (``preflight_measured``, ``releases start --preflight-measure``): the gate runs the
  profiler itself, a short bounded sweep (concurrency 1, batch 1 and a mid batch, ~2 s per
  setting) on the candidate's own replica of each pool (its gRPC endpoint) and on a stable
  replica measured the same way at the same time: one of the pool's, when given
  (``--preflight-stable POOL=HOST:GRPC_PORT``), else a stable Triton the gate starts here on the
  CPU from the fleet's model repository (what a local CPU pool serves).  Both are measured side
  by side, idle, with the same plan, so the diff compares versions, not moments of a shared
  machine.  It judges what a short sweep measures well, the latency at each batch size, with the
  live judge's rule: a regression is ``candidate > stable x (1 + p95_regression_pct) +
  latency_slack_ms``.  The tail factor and the throughput extrapolated to the full batch are shown
  but not judged: a 1-2 s window's p99 on a shared machine is noise (measured: 5.7 vs 14 for two
  identical exports), and they need the full profile (``--preflight`` with the operator's own).
  A regression only counts when a second pair, measured in the other order, shows it again
  (``confirmed_regressions``).
* **given** (``preflight``, ``--preflight STABLE.yaml:CANDIDATE.yaml``): profiles the operator made
  with ``python -m profiler profile`` (one pair per pool).

The threshold is the spec's ``p95_regression_pct`` (the profiler's default, 10%, when the spec has
none): the same tolerance the live judge applies, checked before any client is exposed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from profiler.diff import DEFAULT_THRESHOLD, IncomparableProfiles, ProfileDiff, diff_profiles, render
from router_lib.config import ConfigError, load_profile
from router_lib.domain import Profile
from router_lib.release import CandidateEndpoint
from router_lib.release_spec import ReleaseSpec
from xds_server.tls import ReplicaTls

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PreflightResult:
    passed: bool
    report: str


def threshold_of(spec: ReleaseSpec) -> float:
    pct = spec.thresholds.p95_regression_pct
    return pct / 100 if pct is not None else DEFAULT_THRESHOLD


def preflight(spec: ReleaseSpec, pairs: list[tuple[Path, Path]]) -> PreflightResult:
    """``pairs``: (stable profile, candidate profile) per pool.  Fails on any regression, on a
    profile of another model, or on profiles that cannot be compared."""
    threshold = threshold_of(spec)
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


# -- measured ------------------------------------------------------------------------------------


def latency_regressions(diff: ProfileDiff, threshold: float, slack_ms: float) -> tuple[str, ...]:
    """Batch sizes whose latency rose beyond ``stable x (1 + threshold) + slack_ms``."""
    return tuple(c.metric for c in diff.changes
                 if c.metric.startswith("latency_ms[") and c.candidate > c.baseline * (1 + threshold) + slack_ms)


def confirmed_regressions(regressions: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Metrics that regressed in every paired measurement (none when there is no measurement)."""
    if not regressions:
        return ()
    return tuple(sorted(set.intersection(*(set(r) for r in regressions))))


def render_measured(diff: ProfileDiff, regressions: Sequence[str], threshold: float, slack_ms: float) -> str:
    lines = []
    for c in diff.changes:
        judged = c.metric.startswith("latency_ms[")
        mark = ("REGRESSION" if c.metric in regressions else "ok") if judged else "info"
        lines.append(f"{mark:10} {c.metric:32} {c.baseline:10.3f} -> {c.candidate:10.3f} ({c.relative:+.1%})")
    lines.append(f"{len(regressions)} latency regression(s) beyond +{threshold:.0%} + {slack_ms:g} ms" if regressions
                 else f"no latency regression beyond +{threshold:.0%} + {slack_ms:g} ms")
    return "\n".join(lines)


@dataclass(frozen=True)
class MeasurePlan:
    """The gate's sweep: concurrency 1 only (the profile's latency table and tail), ``batch_sizes``
    (default: 1 and min(8, max batch)), ``warmup_s`` + ``measure_s`` per setting; ``confirm``: a
    regression must show again in a second pair measured in the other order."""

    batch_sizes: tuple[int, ...] = ()
    warmup_s: float = 0.5
    measure_s: float = 1.5
    min_requests: int = 30
    confirm: bool = True


Profiler = Callable[[str, str], Profile]  # (gRPC host:port, label) -> the profile measured there


def _default_profiler(model_name: str, plan: MeasurePlan, artifacts: Path, out_dir: Path,
                      progress: Callable[[str], None], replica_tls: ReplicaTls | None = None) -> Profiler:
    from model_repository.definitions import load_models
    from profiler.bench import SweepPlan
    from profiler.profile_io import write_profile
    from profiler.run import profile_model
    from router_lib.config import load_prices, load_tiers

    model = load_models()[model_name]
    batches = plan.batch_sizes or tuple(sorted({1, min(8, model.max_batch_size)}))
    sweep = SweepPlan(batches, (1,), plan.warmup_s, plan.measure_s, plan.min_requests)
    tiers, prices = load_tiers(ROOT / "data" / "tiers.yaml"), load_prices(ROOT / "data" / "prices.yaml")

    def run(url: str, label: str) -> Profile:
        progress(f"pre-flight: profiling {label} at {url} (batch {list(batches)}, {plan.measure_s:g} s windows)")
        done = profile_model(model, artifacts, sweep, tiers=tiers, prices=prices, instance_type="c7g.xlarge",
                             accelerator="cpu", url=url,
                             client_options=replica_tls.tritonclient_options() if replica_tls else None)
        return write_profile(out_dir / f"{model_name}.{label.replace(' ', '-')}.yaml", done.document)

    return run


@contextlib.contextmanager
def _local_stable(model_name: str, artifacts: Path, replica_tls: ReplicaTls | None = None) -> Iterator[str]:
    """A stable Triton on this machine's CPU, serving the fleet's model repository entry (over mTLS
    like the platform's replicas when ``replica_tls`` is given: one client setting for every URL)."""
    from fleet.triton_process import GrpcTls
    from model_repository.definitions import load_models
    from profiler.local_triton import local_triton

    server_tls = (GrpcTls(replica_tls.server.cert, replica_tls.server.key, replica_tls.server.ca_cert)
                  if replica_tls else None)
    with local_triton(load_models()[model_name], artifacts, instances=1, grpc_tls=server_tls) as server:
        yield server.grpc_url


def preflight_measured(spec: ReleaseSpec, endpoints: Sequence[CandidateEndpoint], *,
                       stable_urls: Mapping[str, str] | None = None, plan: MeasurePlan = MeasurePlan(),
                       artifacts: Path = ROOT / "build" / "models", out_dir: Path | None = None,
                       profiler: Profiler | None = None,
                       local_stable: Callable[[], contextlib.AbstractContextManager[str]] | None = None,
                       progress: Callable[[str], None] = print,
                       replica_tls: ReplicaTls | None = None) -> PreflightResult:
    """Profile the candidate on each pool it runs on and diff it against stable (module docstring).
    ``out_dir``: where the measured profiles are written (default build/releases/preflight/NAME).
    ``profiler`` / ``local_stable`` are the edges (tests give fakes); the verdict is pure."""
    threshold, slack_ms = threshold_of(spec), spec.thresholds.latency_slack_ms
    stable_urls = dict(stable_urls or {})
    by_pool: dict[str, CandidateEndpoint] = {}
    for e in endpoints:
        by_pool.setdefault(e.pool, e)
    if not by_pool:
        return PreflightResult(False, "pre-flight: no candidate endpoint to profile")
    unknown = sorted(set(stable_urls) - set(by_pool))
    if unknown:
        return PreflightResult(False, f"pre-flight: --preflight-stable names pools without a candidate replica: "
                                      f"{', '.join(unknown)}")
    out_dir = out_dir or ROOT / "build" / "releases" / "preflight" / spec.name  # the profiles measured, kept
    measure = profiler or _default_profiler(spec.model, plan, artifacts, out_dir, progress, replica_tls)
    start_local = local_stable or (lambda: _local_stable(spec.model, artifacts, replica_tls))
    lines, passed = [], True
    with contextlib.ExitStack() as stack:
        local: str | None = None
        for pool, endpoint in sorted(by_pool.items()):
            stable_url = stable_urls.get(pool)
            if stable_url is None:
                if local is None:
                    progress("pre-flight: starting a stable Triton on this machine's CPU")
                    local = stack.enter_context(start_local())
                stable_url = local
            candidate_url = f"{endpoint.host}:{endpoint.grpc_port}"
            found: list[tuple[str, ...]] = []
            for attempt in range(2 if plan.confirm else 1):
                order = [("stable", stable_url), ("candidate", candidate_url)]
                if attempt % 2:
                    order.reverse()  # the second pair in the other order: drift hits both sides
                got = {who: measure(url, f"{pool} {who} {attempt + 1}") for who, url in order}
                try:
                    diff = diff_profiles(got["stable"], got["candidate"], threshold)
                except IncomparableProfiles as e:
                    return PreflightResult(False, f"pre-flight: {e}")
                found.append(latency_regressions(diff, threshold, slack_ms))
                lines.append(f"{pool} (pair {attempt + 1}): stable {stable_url} -> candidate v{spec.candidate_version} "
                             f"{candidate_url}")
                lines.append(render_measured(diff, found[-1], threshold, slack_ms))
                if not found[-1]:
                    break
            confirmed = confirmed_regressions(found) if len(found) == (2 if plan.confirm else 1) else ()
            if confirmed:
                lines.append(f"{pool}: regression confirmed by {len(found)} pair(s): {', '.join(confirmed)}")
            elif found[0]:
                lines.append(f"{pool}: the first pair's regression did not show again: noise, not counted")
            passed = passed and not confirmed
    verdict = "passed" if passed else "FAILED: the release stops before any traffic"
    return PreflightResult(passed, "\n".join([*lines, f"pre-flight {verdict}"]))
