"""Start fake KServe pools, the ADS server and a real Envoy on loopback, with ports picked at run
time; stop everything by PID.  Shared by the integration tests and benchmarks/xds (a test bed, not used at run time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from localnet.ports import free_port
from xds_server import (
    DataPlaneSettings,
    Endpoint,
    EnvoyProcess,
    PoolEndpoints,
    RouteWeights,
    XdsServer,
    build_snapshot,
    validate_bootstrap,
    write_envoy_bootstrap,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakePool:
    name: str
    accelerator: str
    models: tuple[str, ...]
    process: subprocess.Popen[str]
    endpoint: Endpoint

    @classmethod
    def start(cls, name: str, models: tuple[str, ...], accelerator: str | None = None) -> FakePool:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "xds_server.fake_kserve", "--pool", name, "--models", ",".join(models)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        ports = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        return cls(
            name, accelerator or name, models, process, Endpoint("127.0.0.1", ports["http_port"], ports["grpc_port"])
        )

    def endpoints(self) -> PoolEndpoints:
        return PoolEndpoints(
            pool=self.name,
            accelerator=self.accelerator,
            emulated=self.accelerator != "cpu",
            models=self.models,
            replicas=(self.endpoint,),
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class DataPlane:
    pools: dict[str, FakePool]
    settings: DataPlaneSettings
    xds: XdsServer
    envoy: EnvoyProcess
    workdir: Path
    extra: list[FakePool] = field(default_factory=list)

    @classmethod
    def start(
        cls, pools: dict[str, tuple[str, ...]], routes: list[RouteWeights] | None = None, envoy_concurrency: int = 1
    ) -> DataPlane:
        started = {name: FakePool.start(name, models) for name, models in pools.items()}
        settings = DataPlaneSettings(http_port=free_port(), grpc_port=free_port())
        xds = XdsServer(port=0)
        xds.start()
        workdir = Path(tempfile.mkdtemp(prefix="xds-dataplane-"))
        plane = cls(started, settings, xds, None, workdir)  # type: ignore[arg-type]
        try:
            from xds_server import even_routes

            plane.publish(routes if routes is not None else even_routes(plane.pool_endpoints(), settings))
            bootstrap = write_envoy_bootstrap(workdir / "envoy.yaml", node_id="envoy-test", xds_port=xds.port)
            validate_bootstrap(bootstrap)
            plane.envoy = EnvoyProcess(bootstrap, concurrency=envoy_concurrency, log_path=workdir / "envoy.log")
            plane.envoy.start().wait_ready(timeout_s=30)
        except BaseException:
            plane.stop()
            raise
        return plane

    def pool_endpoints(self) -> list[PoolEndpoints]:
        return [p.endpoints() for p in [*self.pools.values(), *self.extra] if p.process.poll() is None]

    def publish(self, routes: list[RouteWeights], pools: list[PoolEndpoints] | None = None) -> str:
        snapshot = build_snapshot(pools if pools is not None else self.pool_endpoints(), routes, self.settings)
        return self.xds.set_snapshot(snapshot)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.xds.stop()
        for pool in [*self.pools.values(), *self.extra]:
            pool.stop()
