"""Online calibration of the latency model: service time per (model, pool, batch size) learned
from Triton's own statistics while the platform runs, with the offline profile as the prior.

Pure: the control loop hands :func:`observe` one :class:`StatsReading` per tick (cumulative
counters per replica, read by ``control.stats_source``) and carries the returned
:class:`CalibrationState`; :func:`calibrated_fleet` gives the fleet the deciders use.

The estimator, per (model, pool, batch size ``b``):

* Samples: between two readings of a replica, ``d_ns / d_executions`` of batch size ``b``
  (``compute_input + compute_infer + compute_output``: one execution's service time) is the mean
  of ``k = d_executions`` executions.  Windows of all replicas of a pool are added up.
* Prior: the profile counts as ``prior_executions`` pseudo-executions at its mean.  A profile
  gives the p50 ``L(b)``; execution times are taken as log-normal with the profile's
  ``p99_over_p50`` (what the simulator draws), so the mean is ``L(b) * exp(s^2 / 2)`` with
  ``s = ln(tail) / z99``, and the calibrated p50 is the posterior mean divided by the same factor.
* Posterior mean ``(N0 * prior_mean + sum of ms) / (N0 + n)``: the prior dominates with few
  samples and fades with many.  Once ``n >= N0``, a prior whose mean is more than
  ``conflict_ratio`` away from the observed one is dropped (prior-data conflict: with N0 = 20, a
  profile 40x too slow would otherwise still bias the estimate by 50% after 1,600 executions).  Only sums and counts are published by Triton, so the spread of
  one execution is estimated from the window means (``Var(mean of k) = sigma^2 / k``:
  ``sigma^2 = sum k_i (m_i - m)^2 / (W - 1)``), blended with the prior's log-normal spread
  (``PRIOR_SPREAD_WINDOWS`` pseudo-windows).  Confidence is the relative standard error of the
  posterior mean, ``sigma / sqrt(N0 + n) / mean``.
* Memory: past ``memory_executions`` the sums are scaled down (exponential forgetting), so the
  estimate follows a service time that drifts (a noisy neighbour, a new model version).
* Counter resets: a replica whose counters went back restarted.  Its next reading is a new
  baseline, not a window: the first executions after a start include warm-up (measured here:
  the first batch-1 execution of the digits classifier took 47 ms, the next ones 0.2 ms).

An ensemble (no ``batch_stats`` of its own) is calibrated from its composing steps: per window
and batch size, the sum of the steps' mean times (``_ensemble_windows``).

Fixed overhead outside Triton (Envoy, network, client): where the edge's end-to-end time per
request is known (``StatsReading.end_to_end``, cumulative count and ms per (model, pool)), its
mean minus Triton's mean request time (``inference_stats.success``) over the same readings
(``OverheadSums``).  It is shown as its own number and, once measured on
``min_overhead_requests``, added to each calibrated latency of the profile (a profile's latency is
what one request sees at low load; the measured profiles were taken from a client, overhead
included).

Which profile the deciders get (``calibrated_fleet``): per (model, accelerator), the pools of that
accelerator added up; a batch size is replaced only when it has at least ``min_executions``
executions and a relative standard error at most ``max_relative_error``; at the other batch sizes
the profile takes the prior's shape at the calibrated level (``prior_shaped``: the prior times the
calibrated/prior ratio of the nearest confident sizes).  A (model, accelerator) with no confident
batch size keeps its offline profile untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from router_lib.calibration_stats import ModelStats
from router_lib.domain import Accelerator, Fleet, Profile, Provenance
from router_lib.latency_model import Z99

PRIOR_SPREAD_WINDOWS = 2.0  # how many windows the prior's spread counts as (before any is seen)
ONLINE = "online"


@dataclass(frozen=True)
class CalibrationSettings:
    """How much the prior weighs and when a calibration is trusted (conservative defaults).

    ``prior_executions``: the offline profile counts as this many executions.
    ``min_executions`` / ``max_relative_error``: a batch size's estimate is used by the deciders
    only past both.  ``memory_executions``: older executions fade past this many.
    ``min_overhead_requests``: the overhead outside Triton is added to the profile only past this.
    ``conflict_ratio``: once the executions outnumber the prior's, a prior whose mean is off the
    observed one by more than this factor is dropped.
    ``use_for_decisions``: False shows the calibration in /status without using it.
    ``calibrate_emulated``: also use emulated pools' calibrations.  Off by default: an emulated
    pool's statistics measure the emulation (the profile's own service time plus the host's lag,
    which the policy already adds from ``emulation_lag_ms``), not the accelerator."""

    prior_executions: float = 20.0
    min_executions: float = 1000.0
    max_relative_error: float = 0.02
    memory_executions: float = 50_000.0
    min_overhead_requests: float = 200.0
    conflict_ratio: float = 2.0
    use_for_decisions: bool = True
    calibrate_emulated: bool = False

    def __post_init__(self) -> None:
        for name in ("prior_executions", "min_executions", "min_overhead_requests"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"calibration.{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.max_relative_error, (int, float)) or not 0 < self.max_relative_error < 1:
            raise ValueError(f"calibration.max_relative_error must be in (0, 1), got {self.max_relative_error!r}")
        if not isinstance(self.conflict_ratio, (int, float)) or not self.conflict_ratio > 1:
            raise ValueError(f"calibration.conflict_ratio must be > 1, got {self.conflict_ratio!r}")
        if not isinstance(self.memory_executions, (int, float)) or not self.memory_executions >= 10:
            raise ValueError(f"calibration.memory_executions must be >= 10, got {self.memory_executions!r}")


@dataclass(frozen=True)
class EndToEnd:
    """Cumulative requests and their total ms as the edge measured them (Envoy's
    ``upstream_rq_time`` sum and count) for one (model, pool)."""

    requests: float
    total_ms: float


@dataclass(frozen=True)
class StatsReading:
    """One tick's statistics: ``by_replica[(pool, replica id)][model]`` cumulative counters of
    every replica read (a replica missing here is forgotten: its next reading is a baseline);
    ``end_to_end[(model, pool)]`` the edge's cumulative counts, when known; ``ensembles``: a
    public model -> its composing steps, whose statistics ``by_replica`` holds under their own
    names (an ensemble has no ``batch_stats`` of its own)."""

    by_replica: Mapping[tuple[str, str], Mapping[str, ModelStats]] = field(default_factory=dict)
    end_to_end: Mapping[tuple[str, str], EndToEnd] = field(default_factory=dict)
    ensembles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSums:
    """Sufficient statistics of one (model, pool, batch size): executions ``n``, their total ms,
    ``sum k_i m_i^2`` over windows (``m_i`` a window's mean of ``k_i`` executions) and windows."""

    executions: float = 0.0
    total_ms: float = 0.0
    window_sq_ms2: float = 0.0
    windows: float = 0.0

    def add_window(self, executions: int, total_ms: float) -> ServiceSums:
        mean = total_ms / executions
        return ServiceSums(self.executions + executions, self.total_ms + total_ms,
                           self.window_sq_ms2 + executions * mean * mean, self.windows + 1)

    def plus(self, other: ServiceSums) -> ServiceSums:
        return ServiceSums(self.executions + other.executions, self.total_ms + other.total_ms,
                           self.window_sq_ms2 + other.window_sq_ms2, self.windows + other.windows)

    def faded(self, memory_executions: float) -> ServiceSums:
        """Scaled so that at most ``memory_executions`` count (means and spread unchanged)."""
        if self.executions <= memory_executions:
            return self
        f = memory_executions / self.executions
        return ServiceSums(self.executions * f, self.total_ms * f, self.window_sq_ms2 * f,
                           max(self.windows * f, min(self.windows, 2.0)))

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.executions if self.executions > 0 else None

    def spread_sum_ms2(self) -> float:
        """``sum k_i (m_i - m)^2``: the windows' scatter around the overall mean (>= 0)."""
        if self.executions <= 0:
            return 0.0
        return max(0.0, self.window_sq_ms2 - self.total_ms * self.total_ms / self.executions)


@dataclass(frozen=True)
class OverheadSums:
    """Requests and their total ms as the edge saw them, and as Triton saw them, over the same
    readings.  The overhead is the difference of the two means over the whole (faded) period, not
    per window: Envoy publishes its histogram sums only every few seconds (``stats_flush_interval``),
    so one tick's edge window and Triton window do not cover the same requests, but over many ticks
    they do, up to the edges."""

    edge_requests: float = 0.0
    edge_ms: float = 0.0
    triton_requests: float = 0.0
    triton_ms: float = 0.0

    def plus(self, other: OverheadSums) -> OverheadSums:
        return OverheadSums(self.edge_requests + other.edge_requests, self.edge_ms + other.edge_ms,
                            self.triton_requests + other.triton_requests, self.triton_ms + other.triton_ms)

    def faded(self, memory: float) -> OverheadSums:
        if self.triton_requests <= memory:
            return self
        f = memory / self.triton_requests
        return OverheadSums(self.edge_requests * f, self.edge_ms * f, self.triton_requests * f, self.triton_ms * f)

    @property
    def requests(self) -> float:
        return min(self.edge_requests, self.triton_requests)

    @property
    def mean_ms(self) -> float | None:
        if self.edge_requests <= 0 or self.triton_requests <= 0:
            return None
        return self.edge_ms / self.edge_requests - self.triton_ms / self.triton_requests


@dataclass(frozen=True)
class CalibrationState:
    """What the calibration carries from tick to tick.  ``service`` and ``overhead`` are learned
    (persisted, ``to_json``); ``baselines`` and ``end_to_end`` are the previous reading's counters
    (not persisted: after a restart of the control server the first reading is a baseline)."""

    service: Mapping[tuple[str, str, int], ServiceSums] = field(default_factory=dict)  # (model, pool, batch)
    overhead: Mapping[tuple[str, str], OverheadSums] = field(default_factory=dict)  # (model, pool)
    started_unix_s: float = 0.0
    updated_unix_s: float = 0.0
    baselines: Mapping[tuple[str, str], Mapping[str, ModelStats]] = field(default_factory=dict)
    end_to_end: Mapping[tuple[str, str], EndToEnd] = field(default_factory=dict)
    restarts_seen: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "started_unix_s": self.started_unix_s,
            "updated_unix_s": self.updated_unix_s,
            "restarts_seen": self.restarts_seen,
            "service": [{"model": m, "pool": p, "batch_size": b, "executions": s.executions,
                         "total_ms": s.total_ms, "window_sq_ms2": s.window_sq_ms2, "windows": s.windows}
                        for (m, p, b), s in sorted(self.service.items())],
            "overhead": [{"model": m, "pool": p, "edge_requests": o.edge_requests, "edge_ms": o.edge_ms,
                          "triton_requests": o.triton_requests, "triton_ms": o.triton_ms}
                         for (m, p), o in sorted(self.overhead.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> CalibrationState:
        """Read what :meth:`to_json` wrote; ``ValueError`` naming the entry for anything else."""
        service: dict[tuple[str, str, int], ServiceSums] = {}
        overhead: dict[tuple[str, str], OverheadSums] = {}
        try:
            for i, e in enumerate(data.get("service", [])):
                where = f"{source}: service[{i}]"
                b = e["batch_size"]
                if not isinstance(b, int) or b < 1:
                    raise ValueError(f"{where}.batch_size: expected an integer >= 1, got {b!r}")
                sums = ServiceSums(float(e["executions"]), float(e["total_ms"]), float(e["window_sq_ms2"]),
                                   float(e["windows"]))
                if min(sums.executions, sums.total_ms, sums.window_sq_ms2, sums.windows) < 0:
                    raise ValueError(f"{where}: negative sums {e!r}")
                service[(str(e["model"]), str(e["pool"]), b)] = sums
            for e in data.get("overhead", []):
                overhead[(str(e["model"]), str(e["pool"]))] = OverheadSums(
                    float(e["edge_requests"]), float(e["edge_ms"]), float(e["triton_requests"]), float(e["triton_ms"]))
            return cls(service, overhead, float(data.get("started_unix_s", 0.0)),
                       float(data.get("updated_unix_s", 0.0)), restarts_seen=int(data.get("restarts_seen", 0)))
        except KeyError as e:
            raise ValueError(f"{source}: missing field {e}") from None
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{source}: {type(e).__name__}: {e}") from None


def observe(state: CalibrationState | None, reading: StatsReading, settings: CalibrationSettings,
            wall_s: float) -> CalibrationState:
    """Add one reading's windows (deltas against the previous reading of each replica)."""
    state = state or CalibrationState(started_unix_s=wall_s)
    windows: dict[tuple[str, str, int], list[float]] = {}  # key -> [executions, ms]
    in_triton: dict[tuple[str, str], list[float]] = {}  # (model, pool) -> [requests, ms]
    restarts = state.restarts_seen
    for (pool, replica), models in reading.by_replica.items():
        previous = state.baselines.get((pool, replica), {})
        for model, now in models.items():
            before = previous.get(model)
            if before is None:
                continue  # first sight of this replica (or model): a baseline
            if now.went_back_from(before):
                restarts += 1
                continue  # restarted: a new baseline (its first executions are warm-up)
            for b, c in now.by_batch.items():
                old = before.by_batch.get(b)
                d_exec = c.executions - (old.executions if old else 0)
                d_ms = (c.compute_ns - (old.compute_ns if old else 0)) / 1e6
                if d_exec > 0:
                    w = windows.setdefault((model, pool, b), [0.0, 0.0])
                    w[0] += d_exec
                    w[1] += d_ms
            t = in_triton.setdefault((model, pool), [0.0, 0.0])
            t[0] += now.requests - before.requests
            t[1] += (now.request_ns - before.request_ns) / 1e6
    for ensemble, steps in reading.ensembles.items():
        _ensemble_windows(ensemble, steps, windows)
    service = dict(state.service)
    for service_key, (n, ms) in windows.items():
        service[service_key] = service.get(service_key, ServiceSums()).add_window(int(n), ms).faded(
            settings.memory_executions)
    overhead = dict(state.overhead)
    for key, now_e2e in reading.end_to_end.items():
        before_e2e = state.end_to_end.get(key)
        triton = in_triton.get(key)
        if before_e2e is None or triton is None:
            continue  # a baseline (of the edge or of every replica)
        d_req, d_ms = now_e2e.requests - before_e2e.requests, now_e2e.total_ms - before_e2e.total_ms
        if d_req < 0 or d_ms < 0:
            d_req, d_ms = 0.0, 0.0  # the edge restarted: its counters start again
        overhead[key] = overhead.get(key, OverheadSums()).plus(
            OverheadSums(d_req, d_ms, triton[0], triton[1])).faded(settings.memory_executions)
    return CalibrationState(service, overhead, state.started_unix_s or wall_s, wall_s,
                            {k: dict(v) for k, v in reading.by_replica.items()}, dict(reading.end_to_end), restarts)


def _ensemble_windows(ensemble: str, steps: tuple[str, ...], windows: dict[tuple[str, str, int], list[float]]
                      ) -> None:
    """An ensemble's window at batch ``b``: its steps' mean times at ``b`` added up, over the
    fewest executions any step had (a step-to-step approximation: under load a later step's
    batcher may form other batch sizes than the first; at low load all run the request's own)."""
    if not steps:
        return
    by_pool_batch: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for (model, pool, b), (n, ms) in windows.items():
        if model in steps:
            by_pool_batch.setdefault((pool, b), []).append((n, ms))
    for (pool, b), parts in by_pool_batch.items():
        if len(parts) == len(steps):
            n = min(k for k, _ in parts)
            mean = sum(ms / k for k, ms in parts)
            windows[(ensemble, pool, b)] = [n, n * mean]


# -- estimates ---------------------------------------------------------------------------------
def mean_over_median(profile: Profile) -> float:
    """``exp(s^2 / 2)``, ``s = ln(p99_over_p50) / z99``: a log-normal execution time's mean / p50."""
    s = math.log(profile.p99_over_p50) / Z99
    return math.exp(s * s / 2.0)


@dataclass(frozen=True)
class BatchEstimate:
    """One batch size: the prior (p50 and mean ms), what Triton measured, the posterior."""

    batch_size: int
    prior_p50_ms: float
    prior_mean_ms: float
    observed_mean_ms: float | None
    executions: float
    mean_ms: float  # posterior mean service time of one execution
    p50_ms: float  # posterior p50 (what a profile holds)
    relative_standard_error: float
    confident: bool
    prior_rejected: bool = False  # the data contradicted the prior by more than conflict_ratio


@dataclass(frozen=True)
class Calibration:
    """A (model, pool) - or (model, accelerator), pools added up - calibrated against its prior."""

    model: str
    pools: tuple[str, ...]
    prior: Profile
    batches: tuple[BatchEstimate, ...]
    overhead_ms: float | None
    overhead_requests: float
    updated_unix_s: float
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)

    @property
    def executions(self) -> float:
        return sum(b.executions for b in self.batches)

    @property
    def confident(self) -> bool:
        return any(b.confident for b in self.batches)

    def batch(self, size: int) -> BatchEstimate | None:
        return next((b for b in self.batches if b.batch_size == size), None)

    def profile(self, machine: str = "") -> Profile:
        """The prior with every confident batch size replaced by its posterior p50 (plus the
        measured overhead outside Triton); provenance ``online``."""
        settings = self.settings
        overhead = (self.overhead_ms if self.overhead_ms is not None
                    and self.overhead_requests >= settings.min_overhead_requests else 0.0)
        confident = {b.batch_size: b.p50_ms for b in self.batches if b.confident}
        table = ({size: max(ms + max(overhead, 0.0), 1e-6) for size, ms in prior_shaped(self.prior, confident).items()}
                 if confident else dict(self.prior.latency_ms_by_batch))
        used = sum(b.executions for b in self.batches if b.confident)
        date = time.strftime("%Y-%m-%d", time.gmtime(self.updated_unix_s)) if self.updated_unix_s else ""
        prior = self.prior.provenance
        source = (f"Triton statistics of pool(s) {', '.join(self.pools)}: {used:.0f} executions at batch sizes "
                  f"{[b.batch_size for b in self.batches if b.confident]} (compute input+infer+output, mean -> p50 "
                  f"by the prior's tail {self.prior.p99_over_p50:g}); overhead outside Triton "
                  + (f"{overhead:.3f} ms added" if overhead else "not measured (not added)")
                  + f"; prior: {prior.kind} profile of {prior.date} counting as {settings.prior_executions:g} "
                  f"executions; other batch sizes: the prior scaled by the calibrated/prior ratio of the "
                  f"nearest calibrated sizes")
        provenance = Provenance(kind=ONLINE, date=date, source=source, machine=machine or prior.machine,
                                triton_version=prior.triton_version, model_version=prior.model_version,
                                artifact_sha256=prior.artifact_sha256)
        return replace(self.prior, latency_ms_by_batch=dict(sorted(table.items())), provenance=provenance)


def prior_shaped(prior: Profile, measured: Mapping[int, float]) -> dict[int, float]:
    """A latency table at the prior's batch sizes and every measured one: the measured value where
    there is one; elsewhere the prior's value times the measured/prior ratio, interpolated linearly
    in batch size between the two nearest measured sizes and held at the nearest one beyond them.

    The data set the level, the prior the shape between and beyond them.  Keeping the prior's own
    values next to measured ones would mix two scales in one curve: a measured 2.1 ms at batch 2
    beside the prior's 1.3 ms at batch 64 says a batch of 64 runs faster than one of 2 (the
    emulated GPU's digits classifier, 2026-11-30), which the batcher model and the simulator then
    believe.  No measured size: the prior's table unchanged."""
    table = dict(prior.latency_ms_by_batch)
    if not measured:
        return table
    for size, ms in measured.items():
        if size < 1 or not ms > 0.0 or not math.isfinite(ms):
            raise ValueError(f"measured latency at batch {size}: {ms!r} (batch >= 1 and ms > 0 expected)")
    sizes = sorted(measured)
    ratios = [measured[b] / prior.latency_ms(b) for b in sizes]
    for size in table:
        if size in measured:
            continue
        if size <= sizes[0]:
            ratio = ratios[0]
        elif size >= sizes[-1]:
            ratio = ratios[-1]
        else:
            i = next(j for j, b in enumerate(sizes) if b > size)
            lo, hi = sizes[i - 1], sizes[i]
            ratio = ratios[i - 1] + (ratios[i] - ratios[i - 1]) * (size - lo) / (hi - lo)
        table[size] = table[size] * ratio
    table.update(measured)
    return dict(sorted(table.items()))


def estimate(prior: Profile, sums: Mapping[int, ServiceSums], overhead: OverheadSums, settings: CalibrationSettings,
             pools: tuple[str, ...], updated_unix_s: float = 0.0) -> Calibration:
    """The posterior per batch size (the prior's table points and every batch size observed up to
    the profile's max batch) of one model, from its summed statistics."""
    factor = mean_over_median(prior)
    cv2 = math.exp(2.0 * math.log(factor)) - 1.0  # log-normal: CV^2 = exp(s^2) - 1, factor = exp(s^2/2)
    n0 = settings.prior_executions
    sizes = sorted({*prior.latency_ms_by_batch, *(b for b in sums if b <= prior.max_batch_size)})
    out = []
    for b in sizes:
        s = sums.get(b, ServiceSums())
        prior_p50 = prior.latency_ms(b)
        prior_mean = prior_p50 * factor
        n = s.executions
        observed = s.mean_ms
        # prior-data conflict: once the data outweigh the prior, a prior off by more than
        # ``conflict_ratio`` is dropped rather than left to bias the estimate for thousands of
        # executions (a profile measured elsewhere, from a client, or for another model version)
        rejected = (observed is not None and n >= n0
                    and not prior_mean / settings.conflict_ratio <= observed <= prior_mean * settings.conflict_ratio)
        weight = 0.0 if rejected else n0
        mean = (weight * prior_mean + s.total_ms) / (weight + n) if weight + n > 0 else prior_mean
        dof = max(s.windows - 1.0, 0.0)
        # the prior's spread is a coefficient of variation: it scales with the estimate
        variance = (PRIOR_SPREAD_WINDOWS * cv2 * mean ** 2 + s.spread_sum_ms2()) / (PRIOR_SPREAD_WINDOWS + dof)
        rse = math.sqrt(variance / (weight + n)) / mean if weight + n > 0 and mean > 0 else math.inf
        confident = n >= settings.min_executions and rse <= settings.max_relative_error
        out.append(BatchEstimate(b, prior_p50, prior_mean, observed, n, mean, mean / factor, rse, confident,
                                 rejected))
    return Calibration(prior.model, pools, prior, tuple(out), overhead.mean_ms, overhead.requests, updated_unix_s,
                       settings)


def calibration_of(state: CalibrationState, prior: Profile, pools: tuple[str, ...],
                   settings: CalibrationSettings) -> Calibration:
    """``prior``'s model calibrated on the statistics of ``pools`` added up."""
    sums: dict[int, ServiceSums] = {}
    for (model, pool, b), s in state.service.items():
        if model == prior.model and pool in pools:
            sums[b] = sums.get(b, ServiceSums()).plus(s)
    overhead = OverheadSums()
    for (model, pool), o in state.overhead.items():
        if model == prior.model and pool in pools:
            overhead = overhead.plus(o)
    return estimate(prior, sums, overhead, settings, pools, state.updated_unix_s)


def pool_calibrations(fleet: Fleet, state: CalibrationState | None, settings: CalibrationSettings
                      ) -> tuple[Calibration, ...]:
    """Every (model, pool) of the fleet that has a profile, calibrated on that pool alone (what
    ``/status`` shows)."""
    state = state or CalibrationState()
    out = []
    for pool in fleet.pools:
        for model in pool.models:
            prior = fleet.profile(model, pool.accelerator)
            if prior is not None:
                out.append(calibration_of(state, prior, (pool.name,), settings))
    return tuple(out)


def calibrated_fleet(fleet: Fleet, state: CalibrationState | None, settings: CalibrationSettings,
                     machine: str = "") -> Fleet:
    """``fleet`` with each (model, accelerator)'s profile replaced by its calibration over every
    real pool of that accelerator (emulated ones too with ``calibrate_emulated``), where at least
    one batch size is confident (module docstring)."""
    if state is None or not state.service or not settings.use_for_decisions:
        return fleet
    profiles: dict[tuple[str, Accelerator], Profile] = dict(fleet.profiles)
    changed = False
    for (model, accelerator), prior in fleet.profiles.items():
        pools = tuple(p.name for p in fleet.pools if p.accelerator is accelerator and model in p.models
                      and (settings.calibrate_emulated or not p.emulated))
        if not pools:
            continue
        cal = calibration_of(state, prior, pools, settings)
        if cal.confident:
            profiles[(model, accelerator)] = cal.profile(machine)
            changed = True
    return replace(fleet, profiles=profiles) if changed else fleet


def calibration_view(cal: Calibration, time_dilation: float = 1.0, emulated: bool = False) -> dict[str, Any]:
    """What ``/status`` shows of one calibration: prior vs calibrated at batch 1 and the max batch,
    samples and confidence per batch size, and the profile the deciders would take (its table is
    what ``python -m profiler write-online`` writes back)."""
    profile = cal.profile()

    def point(size: int) -> dict[str, Any]:
        b = cal.batch(size)
        prior_ms = cal.prior.latency_ms(size)
        calibrated = profile.latency_ms(size)
        return {"batch_size": size, "prior_p50_ms": round(prior_ms, 4), "calibrated_p50_ms": round(calibrated, 4),
                "executions": round(b.executions, 1) if b else 0.0,
                "relative_standard_error": _finite(b.relative_standard_error) if b else None,
                "confident": bool(b and b.confident)}
    return {
        "model": cal.model,
        "pools": list(cal.pools),
        "accelerator": cal.prior.accelerator.value,
        "prior_provenance": cal.prior.provenance.kind,
        "confident": cal.confident,
        "emulated": emulated,
        # whether the deciders take it (alone or added up with the other pools of its accelerator)
        "used_for_decisions": cal.confident and cal.settings.use_for_decisions
        and (cal.settings.calibrate_emulated or not emulated),
        "executions": round(cal.executions, 1),
        "overhead_outside_triton_ms": None if cal.overhead_ms is None else round(cal.overhead_ms, 4),
        "overhead_requests": round(cal.overhead_requests, 1),
        "batch_1": point(1),
        "max_batch": point(cal.prior.max_batch_size),
        "by_batch": [{"batch_size": b.batch_size, "prior_mean_ms": round(b.prior_mean_ms, 4),
                      "observed_mean_ms": None if b.observed_mean_ms is None else round(b.observed_mean_ms, 4),
                      "mean_ms": round(b.mean_ms, 4), "p50_ms": round(b.p50_ms, 4),
                      "executions": round(b.executions, 1),
                      "relative_standard_error": _finite(b.relative_standard_error), "confident": b.confident,
                      "prior_rejected": b.prior_rejected}
                     for b in cal.batches],
        "time_dilation": time_dilation,
        "profile": {"latency_ms_by_batch": {str(k): round(v, 6) for k, v in sorted(profile.latency_ms_by_batch.items())},
                    "source": profile.provenance.source, "date": profile.provenance.date},
    }


def _finite(x: float) -> float | None:
    return round(x, 5) if math.isfinite(x) else None
