"""A shared-pool test bed: real Triton replicas (emulated accelerator pools, synthetic outputs) behind
the real Envoy driven by the real ADS server, and an open-loop load generator by tier.

Used by ``tests/resilience`` (short, asserted) and ``benchmarks/resilience`` (longer, repeated).
The pools are emulated on this machine's CPU and answer with synthetic outputs: each batch holds
its Triton instance for the profile's service time, so Triton's queueing, batching and priority
levels are real while the accelerator is not.  Every process is started here and stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

from fleet.supervisor import FleetSupervisor
from localnet.ports import free_port
from model_repository.definitions import load_models
from model_repository.triton_config import TierSharing, target_for_pool, tier_sharing, write_repository
from router_lib.config import load_fleet
from router_lib.domain import Fleet, PoolSpec
from xds_server import (
    DataPlaneSettings,
    Endpoint,
    EnvoyProcess,
    PoolEndpoints,
    RouteWeights,
    XdsServer,
    build_snapshot,
    write_envoy_bootstrap,
)
from xds_server.overload import tier_resilience

ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits_classifier"
TIERS = ("gold", "silver", "bronze")

# A slow accelerator on purpose, so that this 2-core machine can offer it 3x its capacity: 8 ms
# for one request, 10 ms for two (sublinear, like a real accelerator), 4 ms per request past two.
SLOW_PROFILE_MS = {1: 8.0, 2: 10.0, 64: 258.0}
# What a gold request may spend outside its two batches (Envoy, the client, this busy shared
# machine's scheduling noise), as a share of gold's bound: the batch cap leaves it free.
HEADROOM_SHARE = 0.5
# Time dilation of the test bed (``router_lib.domain.dilate``): service times and tier bounds x k,
# so the 2-core machine, shared with other work, adds k times less noise in platform time, and
# 3x the pool's capacity is a load its client can offer.
DILATION = 10.0


def slow_profile(accelerator: str = "gpu") -> dict[str, Any]:
    return {
        "model": MODEL, "accelerator": accelerator, "instance_type": "g5.xlarge", "instances_per_replica": 1,
        "max_batch_size": 64, "latency_ms_by_batch": SLOW_PROFILE_MS,
        "provenance": {"kind": "reference", "date": "2026-11-29", "source": "benchmarks/resilience/harness.py",
                       "assumption": "slow on purpose: a 2-core machine can offer it 3x its capacity"},
    }


def write_fleet(directory: Path, pools: Mapping[str, int], dilation: float = DILATION) -> Path:
    """A fleet file of emulated GPU pools (synthetic outputs) serving the digits classifier with the
    slow profile, in time dilated ``dilation`` times; ``pools``: name -> replicas."""
    (directory / "profiles").mkdir(parents=True, exist_ok=True)
    (directory / "profiles" / f"{MODEL}.gpu.yaml").write_text(yaml.safe_dump(slow_profile()))
    fleet = {
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"), "profiles": "profiles",
        "time_dilation": dilation,
        "pools": [{"name": name, "accelerator": "gpu", "instance_type": "g5.xlarge", "replicas": n, "mode": "emulated",
                   "outputs": "synthetic", "models": [MODEL]} for name, n in pools.items()],
    }
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


def sharing_for(fleet: Fleet, pool: PoolSpec, *, priorities: bool) -> TierSharing:
    """The pool's batches capped so gold's head-of-line wait fits its bound; with ``priorities``
    the tiers' levels and queue policies too (without: one FIFO queue, the comparison)."""
    profile = fleet.profile(MODEL, pool.accelerator)
    assert profile is not None
    sharing = tier_sharing(fleet.tiers, profile, headroom_share=HEADROOM_SHARE, timeout_factor=QUEUE_TIMEOUT_FACTOR,
                           best_effort_queue_ms=BEST_EFFORT_QUEUE_MS, dilation=fleet.time_dilation)
    return sharing if priorities else TierSharing(None, max_batch=sharing.max_batch)


# A bounded tier's request still queued at 0.75 x its bound is rejected (it would miss the bound
# once executed); Envoy's per-try timeout (1 x the bound) then never races Triton's own timeout.
QUEUE_TIMEOUT_FACTOR = 0.75
# Best effort: a queued request waits at most this long (platform time), then is shed; Envoy's
# per-try timeout for it is twice that, so the pool, not Envoy, sheds it.
BEST_EFFORT_QUEUE_MS = 1000.0


def resilience_settings(fleet: Fleet, *, shed: bool, hedge: bool = True) -> DataPlaneSettings:
    """Envoy's per-tier retries, timeouts and admission for ``fleet``'s (dilated) tiers."""
    return DataPlaneSettings(**tier_resilience(fleet.tiers, shed=shed, hedge=hedge,
                                               best_effort_per_try_ms=2 * BEST_EFFORT_QUEUE_MS * fleet.time_dilation))


class SharingSupervisor(FleetSupervisor):
    """The fleet supervisor, writing each pool's repository with its ``TierSharing``."""

    def __init__(self, *args: Any, sharing: Mapping[str, TierSharing], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sharing = dict(sharing)

    def repository_for(self, pool: PoolSpec) -> Path:
        entries = []
        for name in pool.models:
            profile = self.fleet.profile(name, pool.accelerator)
            assert profile is not None
            entries.append((self.models[name], target_for_pool(pool, profile, self.sharing.get(pool.name))))
        return write_repository(self.workdir / "repos" / pool.name, entries, self.artifacts)


@dataclass
class Bed:
    """Real pools + real ADS server + real Envoy.  ``publish`` swaps routes and settings."""

    fleet: Fleet
    supervisor: SharingSupervisor
    xds: XdsServer
    envoy: EnvoyProcess | None
    settings: DataPlaneSettings
    workdir: Path
    owns_workdir: bool = False

    @classmethod
    @contextlib.contextmanager
    def running(cls, pools: Mapping[str, int], *, priorities: Mapping[str, bool], artifacts: Path,
                resilience: bool = True, dilation: float = DILATION, workdir: Path | None = None) -> Iterator[Bed]:
        """``priorities``: pools whose tiers share through priority levels (others: one FIFO queue);
        ``resilience``: Envoy with the tiers' per-try timeouts, hedging, retry budget and admission
        (else today's defaults)."""
        owns = workdir is None
        workdir = workdir or Path(tempfile.mkdtemp(prefix="resilience-"))
        fleet = load_fleet(write_fleet(workdir / "fleet", pools, dilation), tuple(load_models()))
        sharing = {p.name: sharing_for(fleet, p, priorities=priorities.get(p.name, False)) for p in fleet.pools}
        supervisor = SharingSupervisor(fleet, load_models(), artifacts, workdir / "run", sharing=sharing)
        settings = resilience_settings(fleet, shed=any(priorities.values())) if resilience else DataPlaneSettings()
        settings = DataPlaneSettings(**{**settings.__dict__, "http_port": free_port(), "grpc_port": free_port()})
        xds = XdsServer(port=0)
        bed = cls(fleet, supervisor, xds, None, settings, workdir, owns)
        try:
            supervisor.start()
            xds.start()
            bed.publish({tier: next(iter(pools)) for tier in TIERS})
            bootstrap = write_envoy_bootstrap(workdir / "envoy.yaml", node_id="resilience", xds_port=xds.port)
            bed.envoy = EnvoyProcess(bootstrap, concurrency=1, log_path=workdir / "envoy.log").start()
            bed.envoy.wait_ready(timeout_s=30)
            yield bed
        finally:
            bed.stop()

    def pool_endpoints(self) -> list[PoolEndpoints]:
        out = []
        for pool in self.fleet.pools:
            replicas = tuple(Endpoint("127.0.0.1", r.http_port, r.grpc_port)
                             for r in self.supervisor.replicas(pool.name) if r.serving)
            out.append(PoolEndpoints(pool=pool.name, accelerator=pool.accelerator.value, emulated=True,
                                     models=pool.models, replicas=replicas))
        return out

    def publish(self, pool_by_tier: Mapping[str, str], settings: DataPlaneSettings | None = None,
                timeout_s: float = 10.0, fallbacks: bool = False) -> None:
        """Route every tier of the model to one pool; wait until Envoy ACKed.  Without
        ``fallbacks`` only the routed pools are in the data plane (no retry reaches another pool,
        so a comparison of two pools stays apart)."""
        if settings is not None:
            self.settings = DataPlaneSettings(**{**settings.__dict__, "http_port": self.settings.http_port,
                                                 "grpc_port": self.settings.grpc_port})
        routes = [RouteWeights.of(MODEL, tier, ((pool_by_tier[tier], self.settings.total_weight),)) for tier in TIERS]
        pools = [p for p in self.pool_endpoints() if fallbacks or p.pool in pool_by_tier.values()]
        version = self.xds.set_snapshot(build_snapshot(pools, routes, self.settings))
        if self.envoy is not None and not self.xds.wait_acked(version, timeout_s=timeout_s):
            raise TimeoutError(f"Envoy did not ACK snapshot {version} in {timeout_s}s; log: {self.envoy.log_path}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}/v2/models/{MODEL}/infer"

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.xds.stop()
        self.supervisor.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- load ---------------------------------------------------------------------------------------

def digits_body() -> dict[str, Any]:
    x = np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"][0].astype(np.float32)
    return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": x.tolist()}]}


@dataclass(frozen=True)
class Outcome:
    tier: str
    sent_s: float  # since the load started
    status: int  # 0: no HTTP answer (connection error, client timeout)
    latency_ms: float
    retry_after: str | None = None
    served_by: str | None = None


async def _open_loop(url: str, rates: Mapping[str, float], duration_s: float, body: dict[str, Any], seed: int,
                     timeout_s: float) -> list[Outcome]:
    """Poisson arrivals per tier at ``rates`` req/s for ``duration_s``; each request is sent at
    its time whatever happened to the others (open loop: a slow server does not slow the load)."""
    rng = random.Random(seed)
    schedule: list[tuple[float, str]] = []
    for tier, rate in rates.items():
        t = 0.0
        while rate > 0:
            t += rng.expovariate(rate)
            if t >= duration_s:
                break
            schedule.append((t, tier))
    schedule.sort()
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        start = time.perf_counter()

        async def one(at: float, tier: str) -> None:
            sent = time.perf_counter()
            try:
                async with session.post(url, json=body, headers={"x-sla-tier": tier}) as response:
                    await response.read()
                    outcomes.append(Outcome(tier, at, response.status, (time.perf_counter() - sent) * 1000,
                                            response.headers.get("retry-after"), response.headers.get("x-served-by")))
            except (TimeoutError, aiohttp.ClientError):
                outcomes.append(Outcome(tier, at, 0, (time.perf_counter() - sent) * 1000))

        tasks = []
        for at, tier in schedule:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at, tier)))
        await asyncio.gather(*tasks)
    return outcomes


def open_loop(url: str, rates: Mapping[str, float], duration_s: float, *, seed: int = 1,
              timeout_s: float = 10.0) -> list[Outcome]:
    return asyncio.run(_open_loop(url, rates, duration_s, digits_body(), seed, timeout_s))


@dataclass(frozen=True)
class TierSummary:
    tier: str
    sent: int
    ok: int
    shed: int  # 429 with a retry hint
    failed: int  # anything else
    p50_ms: float | None
    p99_ms: float | None
    shed_with_retry_after: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def shed_fraction(self) -> float:
        return self.shed / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "sent": self.sent, "ok": self.ok, "shed": self.shed, "failed": self.failed,
                "shed_fraction": round(self.shed_fraction, 4), "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "shed_with_retry_after": self.shed_with_retry_after,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def summarize(outcomes: list[Outcome], *, warmup_s: float = 0.0) -> dict[str, TierSummary]:
    """Per tier, over requests sent after ``warmup_s``: latency percentiles of the answered ones."""
    out = {}
    for tier in TIERS:
        mine = [o for o in outcomes if o.tier == tier and o.sent_s >= warmup_s]
        ok = [o.latency_ms for o in mine if o.status == 200]
        shed = [o for o in mine if o.status == 429]
        statuses: dict[int, int] = {}
        for o in mine:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        out[tier] = TierSummary(tier, len(mine), len(ok), len(shed), len(mine) - len(ok) - len(shed),
                                _percentile(ok, 50), _percentile(ok, 99),
                                sum(1 for o in shed if o.retry_after), statuses)
    return out


def median_spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def capacity_per_s(bed: Bed, pool: str) -> float:
    """Requests per second one replica of ``pool`` completes at its capped batch (platform time
    is dilated: this is the real-time rate the load generator must offer)."""
    spec = bed.fleet.pool(pool)
    profile = bed.fleet.profile(MODEL, spec.accelerator)
    assert profile is not None
    batch = bed.supervisor.sharing[pool].max_batch or profile.max_batch_size
    return batch * 1000.0 / profile.latency_ms(batch)


def bound_ms(bed: Bed, tier: str) -> float | None:
    return bed.fleet.tiers.get(tier).p99_ms


def within_bound(summary: TierSummary, outcomes: list[Outcome], bound: float, warmup_s: float = 0.0) -> float:
    """Share of the tier's requests answered 200 within ``bound`` ms (anything else misses)."""
    mine = [o for o in outcomes if o.tier == summary.tier and o.sent_s >= warmup_s]
    return sum(1 for o in mine if o.status == 200 and o.latency_ms <= bound) / len(mine) if mine else 0.0
