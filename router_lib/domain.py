"""Domain values shared by the router, the fleet supervisor and the control server.

Everything here is a frozen dataclass that was validated when it was built (see
``router_lib.config`` for the file loaders).  Code past the loaders trusts these values.

Units are in the names: ``*_ms`` milliseconds, ``*_per_s`` per second, ``*_usd`` US dollars.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Accelerator(enum.StrEnum):
    """Kind of hardware a pool runs on."""

    CPU = "cpu"
    GPU = "gpu"
    INFERENTIA = "inferentia"


class PoolMode(enum.StrEnum):
    """``real``: the pool runs on the hardware it names.  ``emulated``: a real Triton on this
    machine whose service time follows the accelerator's profile (never presented as real)."""

    REAL = "real"
    EMULATED = "emulated"


class EmulatedOutputs(enum.StrEnum):
    """What an emulated pool returns.  ``real`` runs the real model (default: a request must never
    get a wrong answer because of where it was routed); ``synthetic`` returns zeros of the right
    shape, marked as synthetic, for timing studies only."""

    REAL = "real"
    SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class Provenance:
    """Where a profile's numbers come from.

    kind ``measured``: by the profiler on ``machine`` on ``date``.
    kind ``reference``: public figures (``source``) with the scaling ``assumption`` stated.
    """

    kind: str
    date: str
    source: str = ""
    assumption: str = ""
    machine: str = ""
    triton_version: str = ""
    model_version: str = ""
    artifact_sha256: str = ""


def interpolate_latency_ms(latency_ms_by_batch: Mapping[int, float], batch_size: int) -> float:
    """Latency of ``batch_size`` from a table of measured (batch size -> ms) points.

    Linear between points; below the first point, the first value; past the last point,
    extrapolated from the last two (one point only: proportional to batch size).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = sorted(latency_ms_by_batch)
    values = [latency_ms_by_batch[b] for b in sizes]
    if len(sizes) == 1:
        return values[0] * batch_size / sizes[0] if batch_size > sizes[0] else values[0]
    if batch_size <= sizes[0]:
        return values[0]
    i = bisect.bisect_left(sizes, batch_size)
    if i < len(sizes) and sizes[i] == batch_size:
        return values[i]
    lo = min(i - 1, len(sizes) - 2)
    b0, b1, v0, v1 = sizes[lo], sizes[lo + 1], values[lo], values[lo + 1]
    return v0 + (v1 - v0) * (batch_size - b0) / (b1 - b0)


@dataclass(frozen=True)
class Profile:
    """Service time of one model on one accelerator, per replica.

    ``latency_ms_by_batch`` maps a batch size to the p50 time of one execution of that batch on one
    model instance.  Between points latency is interpolated linearly; past the last point it is
    extrapolated from the last two (one point: proportional to batch size).  ``p99_over_p50`` is
    the tail factor of a single execution.  ``instances_per_replica`` executions run in parallel.
    """

    model: str
    accelerator: Accelerator
    instance_type: str
    latency_ms_by_batch: Mapping[int, float]
    instances_per_replica: int
    max_batch_size: int
    provenance: Provenance
    p99_over_p50: float = 1.2
    # Seconds from "start a replica" to "ready for traffic" on this accelerator: node, image pull,
    # model load (0 when unknown).  The capacity decider plans with it; routing counts a replica
    # only once it is ready.
    cold_start_s: float = 0.0

    def latency_ms(self, batch_size: int) -> float:
        """p50 service time in ms of one execution of ``batch_size`` requests."""
        return interpolate_latency_ms(self.latency_ms_by_batch, batch_size)

    def throughput_per_replica_per_s(self, batch_size: int | None = None) -> float:
        """Requests per second one replica completes when every instance runs full batches."""
        b = batch_size or self.max_batch_size
        return self.instances_per_replica * b * 1000.0 / self.latency_ms(b)


@dataclass(frozen=True)
class Tier:
    """An SLA tier.  ``p99_ms`` None means best effort (bronze)."""

    name: str
    p99_ms: float | None
    target_compliance: float | None = None


@dataclass(frozen=True)
class TierSet:
    tiers: Mapping[str, Tier]
    default_tier: str
    fallback_order: tuple[Accelerator, ...]

    def get(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise KeyError(f"unknown SLA tier {name!r}; known: {sorted(self.tiers)}") from None


@dataclass(frozen=True)
class Prices:
    price_per_hour_usd: Mapping[str, float]
    source: str
    retrieved: str
    region: str

    def of(self, instance_type: str) -> float:
        try:
            return self.price_per_hour_usd[instance_type]
        except KeyError:
            raise KeyError(
                f"no price for instance type {instance_type!r}; known: {sorted(self.price_per_hour_usd)}"
            ) from None


@dataclass(frozen=True)
class PoolSpec:
    """A pool as configured: what it is, what it costs, how many replicas.

    ``replicas`` is the count it starts with; the capacity decider keeps it within
    ``[min_replicas, max_replicas]`` (both equal to ``replicas`` when the file sets neither: a
    fixed pool)."""

    name: str
    accelerator: Accelerator
    instance_type: str
    price_per_hour_usd: float
    replicas: int
    mode: PoolMode
    outputs: EmulatedOutputs = EmulatedOutputs.REAL
    models: tuple[str, ...] = ()
    min_replicas: int | None = None
    max_replicas: int | None = None
    # The tiers share this pool through Triton priority levels (docs/overload.md): its model configs
    # declare a level and queue policy per tier, the edge writes each request's level, and the
    # routing policy may place a looser tier beside a stricter one (gold is always served first).
    share_tiers: bool = False

    @property
    def replica_bounds(self) -> tuple[int, int]:
        low = self.replicas if self.min_replicas is None else self.min_replicas
        high = self.replicas if self.max_replicas is None else self.max_replicas
        return low, high

    @property
    def autoscaled(self) -> bool:
        low, high = self.replica_bounds
        return low != high

    @property
    def emulated(self) -> bool:
        return self.mode is PoolMode.EMULATED


@dataclass(frozen=True)
class Fleet:
    """The whole configured fleet: pools, the profiles of each (model, accelerator), tiers, prices.

    ``max_local_replicas``: how many replicas this machine may run at once, all pools together
    (None: no limit stated).  ``budget_per_hour_usd``: a ceiling on the fleet's $/h the capacity
    decider keeps to by shedding the loosest tiers first (None: no ceiling)."""

    pools: tuple[PoolSpec, ...]
    profiles: Mapping[tuple[str, Accelerator], Profile]
    tiers: TierSet
    prices: Prices
    models: tuple[str, ...] = field(default=())
    max_local_replicas: int | None = None
    budget_per_hour_usd: float | None = None
    # Emulated time: every service time, cold start and tier bound here is the real one x this
    # factor (arrival rates must be divided by it).  1 = real time.  See ``dilate``.
    time_dilation: float = 1.0
    # The capacity decider's settings as written in the fleet file (``autoscaling:``), validated
    # at load by building ``router_lib.capacity_types.CapacitySettings`` from them.
    autoscaling: Mapping[str, float] = field(default_factory=dict)
    # The routing policy's settings as written in the fleet file (``routing:``), validated at
    # load by building ``router_lib.policy_types.PolicySettings`` from them.
    routing: Mapping[str, float | bool] = field(default_factory=dict)
    # The online calibration's settings as written in the fleet file (``calibration:``), validated
    # at load by building ``router_lib.calibration.CalibrationSettings`` from them.
    calibration: Mapping[str, float | bool] = field(default_factory=dict)

    @property
    def tiers_share_a_pool(self) -> bool:
        """Some pool shares its tiers through priority levels (``PoolSpec.share_tiers``): the edge
        must then write each request's level."""
        return any(p.share_tiers for p in self.pools)

    def pool(self, name: str) -> PoolSpec:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(f"unknown pool {name!r}; known: {[p.name for p in self.pools]}")

    def profile(self, model: str, accelerator: Accelerator) -> Profile | None:
        return self.profiles.get((model, accelerator))

    def fallback_rank(self, accelerator: Accelerator) -> int:
        """Position of ``accelerator`` in the tiers' fallback order (unlisted kinds last)."""
        order = self.tiers.fallback_order
        return order.index(accelerator) if accelerator in order else len(order)

    def fallback_key(self, pool: PoolSpec) -> tuple[int, float, str]:
        """The one order in which pools take traffic no pool can meet: fallback order of the
        accelerator (GPU -> Inferentia -> CPU), then the cheaper, then by name."""
        return self.fallback_rank(pool.accelerator), pool.price_per_hour_usd, pool.name


def dilate(fleet: Fleet, k: float) -> Fleet:
    """The same fleet in time slowed down ``k`` times: profile latencies, cold starts and tier
    bounds x k (throughputs / k, utilisations and costs per request unchanged in platform time).

    Why: on one small machine, emulated accelerator replicas that sleep for their service time
    cost almost no CPU, so with service times x k the same machine can carry a fleet k times
    larger in platform terms (tens of replicas) at arrival rates / k.  What it does not show:
    overheads that do not scale (Envoy, the client, the network) shrink k times in platform terms.
    """
    if k == 1.0:
        return fleet
    if k <= 0:
        raise ValueError(f"time dilation must be > 0, got {k}")
    from dataclasses import replace

    profiles = {key: replace(p, latency_ms_by_batch={b: v * k for b, v in p.latency_ms_by_batch.items()},
                             cold_start_s=p.cold_start_s * k) for key, p in fleet.profiles.items()}
    tiers = replace(fleet.tiers, tiers={n: replace(t, p99_ms=None if t.p99_ms is None else t.p99_ms * k)
                                        for n, t in fleet.tiers.tiers.items()})
    return replace(fleet, profiles=profiles, tiers=tiers, time_dilation=fleet.time_dilation * k)
