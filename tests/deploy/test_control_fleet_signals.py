"""Fleet-wide signals: the control server as the cluster runs it reads every Envoy's and Triton's
series through Prometheus (``--metrics-source=prometheus``), whose queries sum over every scraped
instance, not from the one Envoy a Service URL happens to reach.  Here a real Prometheus scrapes a
real Envoy: the server decides only once Prometheus answers, and Envoy's request rate reaches the
decider through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from fleet.supervisor import wait_until
from localnet.ports import free_port
from tests.deploy.fake_apiserver import FakeApiServer
from tests.deploy.test_control_k8s_integration import MODELS, Load, get, slice_of
from xds_server import EnvoyProcess
from xds_server.bootstrap import envoy_bootstrap
from xds_server.testbed import ROOT, FakePool

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus not installed")]


def test_the_control_server_decides_from_every_envoy_through_prometheus(tmp_path: Path):
    api = FakeApiServer().start()
    pool: FakePool | None = None
    control = prometheus = None
    envoys: list[EnvoyProcess] = []
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": api.url}}], "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        pool = FakePool.start("cpu", MODELS)
        api.apply(slice_of(pool, "a"))
        xds_port, admin_port, prom_port = free_port(), free_port(), free_port()
        http_port, grpc_port = free_port(), free_port()
        admin = f"http://127.0.0.1:{admin_port}"
        control = subprocess.Popen(
            [sys.executable, "-m", "control", "serve", "--discovery=kubernetes", f"--kubeconfig={kubeconfig}",
             "--fleet=fleet.yaml", f"--state={tmp_path / 'state.json'}", f"--xds-port={xds_port}",
             f"--admin-port={admin_port}", f"--http-port={http_port}", f"--grpc-port={grpc_port}",
             "--metrics-source=prometheus", f"--prometheus-url=http://127.0.0.1:{prom_port}",
             "--prometheus-window-s=5", "--interval-s=0.5", "--release-poll-s=0"],
            stdout=(tmp_path / "control.log").open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_until(lambda: "metrics:" in (get(f"{admin}/status")[1].get("last_error") or ""), 60,
                   "the server to say Prometheus is unreachable")
        assert get(f"{admin}/status")[1]["routes"] == [], "no decision without the fleet's signals"

        bootstrap = envoy_bootstrap(node_id="envoy-0", xds_port=xds_port)
        (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(bootstrap))
        envoys.append(EnvoyProcess(tmp_path / "envoy.yaml", log_path=tmp_path / "envoy.log").start())
        envoys[0].wait_ready(timeout_s=30)
        targets = [e.admin_url.removeprefix("http://") for e in envoys]
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": targets}]}]}))
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prom'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: get(f"{admin}/status")[1].get("routes"), 60, "a decision once Prometheus answers")
        url = f"http://127.0.0.1:{http_port}/v2/models/digits_classifier/infer"
        wait_until(lambda: requests.post(url, json={}, timeout=2).status_code == 200, 30, "a route through Envoy")
        # Requests counted by Envoy reach the decider through Prometheus: Envoy's per-cluster rate
        # (steady load: a series' first sample carries no rate).
        with Load(http_port) as load:
            wait_until(lambda: any((m or {}).get("request_rate_per_s") for p in get(f"{admin}/status")[1]["pools"]
                                   for m in p["metrics"].values()), 60, "Envoy's request rate in the decider's inputs")
        assert load.failures == []
    finally:
        for envoy in envoys:
            envoy.stop()
        for process in (control, prometheus):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        if pool is not None:
            pool.stop()
        api.stop()
