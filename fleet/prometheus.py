"""A real Prometheus (Debian's package) scraping the local platform, on 127.0.0.1.

Triton replicas come and go, so they are a file_sd target list rewritten on every replica change,
each labelled with its ``pool`` (and ``emulated``) as the in-cluster ServiceMonitors do; the control
server is the job ``xds-control`` and Envoy the job ``envoy``, the names the dashboards and alert
rules (``alerts/rules.yaml``) use.  ``make dashboards-png`` renders against it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from fleet.replica import ReplicaInfo
from fleet.supervisor import wait_until
from fleet.triton_process import PROJECT_ROOT
from localnet.ports import free_port

RULES = PROJECT_ROOT / "alerts" / "rules.yaml"


@dataclass
class PrometheusProcess:
    workdir: Path
    control_admin_port: int
    envoy_admin_port: int
    port: int = 0
    scrape_interval_s: float = 2.0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_targets(self, replicas: Sequence[ReplicaInfo]) -> None:
        groups = [{"targets": [f"127.0.0.1:{r.metrics_port}"],
                   "labels": {"pool": r.pool, "accelerator": r.accelerator, "emulated": str(r.emulated).lower(),
                              "replica": str(r.index)}}
                  for r in replicas if r.alive]
        path = self.workdir / "triton-targets.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(path)

    def config(self) -> dict:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(RULES)] if RULES.exists() else [],
            "scrape_configs": [
                {"job_name": "triton", "file_sd_configs": [{"files": [str(self.workdir / "triton-targets.json")],
                                                            "refresh_interval": "1s"}]},
                {"job_name": "xds-control", "static_configs": [{"targets": [f"127.0.0.1:{self.control_admin_port}"]}]},
                {"job_name": "envoy", "metrics_path": "/stats/prometheus",
                 "static_configs": [{"targets": [f"127.0.0.1:{self.envoy_admin_port}"]}]},
            ],
        }

    def start(self, replicas: Sequence[ReplicaInfo]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("Debian's prometheus is not installed: run `make system-deps`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.write_targets(replicas)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # a terminal Ctrl-C reaches the platform only; it stops this in order
        log.close()
        wait_until(self._ready, 30, "Prometheus /-/ready")

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited; see {self.workdir / 'prometheus.log'}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:  # noqa: S310 - loopback
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
