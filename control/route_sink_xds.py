"""Route sink over the ADS server (``control.ports.RouteSink``): builds the xDS snapshot from the
pools and routes, checks it (``Snapshot.consistent``) and hands it to the server, which pushes
only when the content hash changed.  An inconsistent snapshot is never published; the one in
force stays, and the problems are returned for ``/status``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from control.ports import PoolServing, PublishResult
from router_lib.routes import RouteWeights
from xds_server.inputs import CandidatePool, DataPlaneSettings, Endpoint, MirrorTarget, PoolEndpoints, VersionSplit
from xds_server.server import XdsServer
from xds_server.snapshot import Snapshot, build_snapshot


def pool_endpoints(pool: PoolServing) -> PoolEndpoints:
    return PoolEndpoints(
        pool=pool.pool,
        accelerator=pool.accelerator,
        emulated=pool.emulated,
        models=pool.models,
        replicas=tuple(Endpoint(r.host, r.http_port, r.grpc_port, r.authority) for r in pool.replicas),
    )


class XdsRouteSink:
    def __init__(self, xds: XdsServer, settings: DataPlaneSettings) -> None:
        self.xds = xds
        self.settings = settings
        self.snapshot: Snapshot | None = None
        self.last_push_unix_s: float | None = None

    def publish(self, pools: Sequence[PoolServing], routes: Sequence[RouteWeights], *,
                splits: Sequence[VersionSplit] = (), candidates: Sequence[CandidatePool] = (),
                mirrors: Sequence[MirrorTarget] = ()) -> PublishResult:
        """``splits`` / ``candidates`` / ``mirrors``: releases in force (candidate share per route,
        candidate replicas, shadow comparators)."""
        current = self.snapshot.version if self.snapshot else None
        live = [pool_endpoints(p) for p in pools if p.replicas]
        served = {model for p in live for model in p.models}
        # A pool that lost its last replica keeps its clusters while other pools serve all its
        # models: they fall through to those pools (EDS priorities).  Envoy applies CDS before the
        # RDS that stops naming the pool, so removing its clusters would 503 requests in between.
        live += [pool_endpoints(p) for p in pools if not p.replicas and p.models and set(p.models) <= served]
        if not live:
            if self.snapshot is not None:  # the endpoints in force may still serve: keep them
                return PublishResult(current, False, ("no pool has a ready replica: the snapshot in force stays",))
            # Nothing published yet: Envoy gets its listeners (each of the fleet's models a clear
            # 503 with a retry hint, any other a 404) rather than a refused connection behind a
            # healthy NLB.
            routes = ()
        snapshot = build_snapshot(live, routes, self.settings, splits=splits, candidates=candidates, mirrors=mirrors,
                                  models=[m for p in pools for m in p.models])
        if snapshot.version == current:
            return PublishResult(current, False)
        problems = snapshot.consistent()
        if problems:
            return PublishResult(current, False, tuple(problems))
        self.xds.set_snapshot(snapshot)
        self.snapshot = snapshot
        self.last_push_unix_s = time.time()
        return PublishResult(snapshot.version, True)

    def wait_acked(self, version: str, timeout_s: float) -> bool:
        return self.xds.wait_acked(version, timeout_s=timeout_s)

    def status(self) -> Any:
        return self.xds.status()
