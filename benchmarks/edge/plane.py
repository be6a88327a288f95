"""A real data plane for the edge checks: one real CPU pool (tritonserver serving the real
``digits_classifier`` and ``text_embedding``), the ADS server in this process and a real Envoy,
on loopback with ports picked at run time.  ``publish(edge)`` swaps the edge settings and waits
until Envoy ACKs them.  Shared by tests/edge and the latency benchmark; stopped by PID."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from fleet.supervisor import FleetSupervisor
from localnet.ports import free_ports
from model_repository.definitions import load_models
from router_lib.config import load_fleet
from xds_server import (
    DataPlaneSettings,
    Endpoint,
    EnvoyProcess,
    PoolEndpoints,
    XdsServer,
    build_snapshot,
    even_routes,
    write_envoy_bootstrap,
)
from xds_server.edge_settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("digits_classifier", "text_embedding")


@dataclass
class EdgePlane:
    artifacts: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="edge-plane-")))
    envoy_concurrency: int = 1

    def start(self) -> EdgePlane:
        d = self.workdir
        shutil.copytree(ROOT / "profiles", d / "profiles", dirs_exist_ok=True)
        (d / "fleet.yaml").write_text(yaml.safe_dump({
            "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
            "profiles": "profiles",
            "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1,
                       "mode": "real", "models": list(MODELS)}],
        }))
        self.models = {name: m for name, m in load_models().items() if name in MODELS}
        self.supervisor = FleetSupervisor(load_fleet(d / "fleet.yaml", tuple(load_models())), load_models(),
                                          self.artifacts, d / "run")
        self.xds: XdsServer | None = None
        self.envoy: EnvoyProcess | None = None
        try:
            self.supervisor.start()
            (info,) = self.supervisor.replicas("cpu")
            self.triton_http = f"127.0.0.1:{info.http_port}"
            self.triton_grpc = f"127.0.0.1:{info.grpc_port}"
            self.pool = PoolEndpoints(pool="cpu", accelerator="cpu", emulated=False, models=MODELS,
                                      replicas=(Endpoint("127.0.0.1", info.http_port, info.grpc_port),))
            http_port, grpc_port, admin_port = free_ports(3)
            self.settings = DataPlaneSettings(http_port=http_port, grpc_port=grpc_port)
            self.xds = XdsServer(port=0)
            self.xds.start()
            self.publish(EdgeSettings(), wait=False)
            bootstrap = write_envoy_bootstrap(d / "envoy.yaml", node_id="edge-test", xds_port=self.xds.port,
                                              admin_port=admin_port)
            self.envoy = EnvoyProcess(bootstrap, concurrency=self.envoy_concurrency, log_path=d / "envoy.log")
            self.envoy.start().wait_ready(timeout_s=30)
            self._wait_acked()
        except BaseException:
            self.stop()
            raise
        return self

    def publish(self, edge: EdgeSettings, *, wait: bool = True) -> str:
        """Publish the same routes with other edge settings; with ``wait``, return once Envoy ACKed."""
        settings = replace(self.settings, edge=edge)
        snapshot = build_snapshot([self.pool], even_routes([self.pool], settings), settings)
        self.version = self.xds.set_snapshot(snapshot)  # type: ignore[union-attr]
        if wait:
            self._wait_acked()
        return self.version

    def _wait_acked(self) -> None:
        if not self.xds.wait_acked(self.version, timeout_s=20):  # type: ignore[union-attr]
            raise RuntimeError(f"Envoy did not ACK version {self.version}: {self.xds.status()}\n"  # type: ignore[union-attr]
                               f"{self.envoy.log_tail() if self.envoy else ''}")

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.xds is not None:
            self.xds.stop()
        self.supervisor.stop()
