"""The control server as the cluster runs it (``--discovery=kubernetes``), end to end on loopback:
a local API server speaking list/watch (``fake_apiserver.py``) lists the Triton pools'
EndpointSlices, the real ``python -m control serve`` watches them, a real Envoy gets its config
over ADS and routes to small real KServe upstreams.  Under steady load the slices churn the way a
rollout and a scale-in make them churn (a pod terminating while its preStop keeps it serving, a new
pod starting then ready, a pool emptied while the watch missed it and its resourceVersion
expired) while a drain pushes new weights, and not one request fails.  Before any replica exists, Envoy already listens and
``/healthz`` says 503, naming why."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from fleet.supervisor import wait_until
from localnet.ports import free_port
from tests.deploy.fake_apiserver import FakeApiServer, endpoint_slice, pod_endpoint
from xds_server import EnvoyProcess, write_envoy_bootstrap
from xds_server.testbed import ROOT, FakePool

pytestmark = pytest.mark.integration

MODELS = ("text_embedding", "digits_classifier")


def slice_of(pool: FakePool, name: str, **conditions) -> dict:
    """Each fake replica listens on its own ports, so it gets a slice of its own: the
    EndpointSlice controller also splits a Service's endpoints by port set."""
    ports = {"http": pool.endpoint.http_port, "grpc": pool.endpoint.grpc_port, "http-metrics": pool.endpoint.http_port}
    return endpoint_slice(f"triton-{pool.name}-{name}", pool=pool.name, ports=ports,
                          endpoints=[pod_endpoint("127.0.0.1", f"triton-{pool.name}-{name}", **conditions)])


def get(url: str) -> tuple[int, dict]:
    try:
        r = requests.get(url, timeout=2)
        return r.status_code, r.json()
    except requests.RequestException:
        return 0, {}


class Load:
    """Steady REST load over both models and every tier; counts outcomes."""

    def __init__(self, http_port: int) -> None:
        self.url = f"http://127.0.0.1:{http_port}/v2/models/{{}}/infer"
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        i = 0
        while not self._stop.is_set():
            model, tier = MODELS[i % 2], ("gold", "silver", "bronze")[i % 3]
            i += 1
            try:
                r = session.post(self.url.format(model), json={"inputs": []}, headers={"x-sla-tier": tier}, timeout=5)
                ok = r.status_code == 200 and r.json().get("model_name") == model
                self.outcomes["ok" if ok else f"http {r.status_code}"] += 1
                if not ok:
                    self.failures.append(f"{model}/{tier}: {r.status_code} {r.text[:200]}")
            except requests.RequestException as e:
                self.outcomes["error"] += 1
                self.failures.append(f"{model}/{tier}: {e}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_control_server_on_kubernetes_discovery_serves_through_churn_with_no_failed_request(tmp_path: Path):
    api = FakeApiServer().start()
    started: list[FakePool] = []
    control: subprocess.Popen[bytes] | None = None
    envoy: EnvoyProcess | None = None
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "inference"}}],
        }))
        http_port, grpc_port, xds_port, admin_port = (free_port() for _ in range(4))
        admin = f"http://127.0.0.1:{admin_port}"
        log = (tmp_path / "control.log").open("wb")
        control = subprocess.Popen(
            [sys.executable, "-m", "control", "serve", "--discovery=kubernetes", f"--kubeconfig={kubeconfig}",
             "--fleet=fleet.yaml", f"--state={tmp_path / 'state.json'}", f"--xds-port={xds_port}",
             f"--admin-port={admin_port}", f"--http-port={http_port}", f"--grpc-port={grpc_port}",
             "--envoy-listen-address=127.0.0.1", "--interval-s=0.25", "--k8s-sync-timeout-s=5"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_until(lambda: get(f"{admin}/readyz")[0] == 200, 60, "a first snapshot (listeners only)")
        status, health = get(f"{admin}/healthz")
        assert status == 503 and "no pool has a serving replica" in health["problems"], health

        envoy = EnvoyProcess(write_envoy_bootstrap(tmp_path / "envoy.yaml", node_id="envoy-k8s", xds_port=xds_port),
                             log_path=tmp_path / "envoy.log").start()
        envoy.wait_ready(timeout_s=30)
        # Envoy listens although nothing is discovered yet: the fleet's models are unavailable (503,
        # retry), an unknown one is unknown (404); not a refused connection.
        wait_until(lambda: requests.post(f"http://127.0.0.1:{http_port}/v2/models/digits_classifier/infer",
                                       json={}, timeout=2).status_code == 503, 20, "Envoy's listeners")
        early = requests.post(f"http://127.0.0.1:{http_port}/v2/models/digits_classifier/infer", json={}, timeout=2)
        assert early.headers.get("retry-after") == "1" and "no ready replica" in early.json()["error"], early.text
        assert requests.post(f"http://127.0.0.1:{http_port}/v2/models/nope/infer", json={}, timeout=2).status_code == 404

        cpu_a, cpu_b, gpu = (FakePool.start(n, MODELS) for n in ("cpu", "cpu", "gpu"))
        started += [cpu_a, cpu_b, gpu]
        for pool, name in ((cpu_a, "a"), (cpu_b, "b"), (gpu, "g")):
            api.apply(slice_of(pool, name))
        wait_until(lambda: get(f"{admin}/healthz")[0] == 200, 30, "/healthz once replicas are discovered")

        def in_envoy(pool: FakePool) -> bool:
            return f"127.0.0.1:{pool.endpoint.http_port}::" in envoy.admin_get("/clusters")

        wait_until(lambda: all(in_envoy(p) for p in (cpu_a, cpu_b, gpu)), 20, "every replica in Envoy's EDS")
        # ADS sends clusters and endpoints before routes: the load starts once both models are routed
        # (what it asserts is that the churn loses nothing, not that start-up answers instantly)
        wait_until(lambda: all(requests.post(f"http://127.0.0.1:{http_port}/v2/models/{m}/infer", json={"inputs": []},
                                           timeout=2).status_code == 200 for m in MODELS), 20, "both models routed")

        with Load(http_port) as load:
            wait_until(lambda: load.outcomes["ok"] >= 50, 30, "steady load")
            # 1. scale-in: cpu_a terminates; preStop keeps it serving until it is out of EDS
            api.apply(slice_of(cpu_a, "a", ready=False, serving=True, terminating=True))
            wait_until(lambda: not in_envoy(cpu_a), 20, "the terminating replica drained from EDS")
            cpu_a.stop()
            api.delete("inference", "triton-cpu-a")
            # 2. scale-out: a new pod starts (not ready: no traffic), then turns ready
            cpu_c = FakePool.start("cpu", MODELS)
            started.append(cpu_c)
            api.apply(slice_of(cpu_c, "c", ready=False))
            # a weight push in the middle of the churn: the gpu pool drained (weight 0, ACKed), back
            drained = requests.post(f"{admin}/drain?pool=gpu", timeout=10)
            assert drained.status_code == 200, drained.text
            assert not [r for r in get(f"{admin}/status")[1]["routes"] if r["weights"].get("gpu")]
            time.sleep(0.5)  # two more ticks: a not-ready pod must stay out of EDS all along
            assert not in_envoy(cpu_c)
            api.apply(slice_of(cpu_c, "c"))
            assert requests.post(f"{admin}/undrain?pool=gpu", timeout=10).status_code == 200
            wait_until(lambda: in_envoy(cpu_c), 20, "the new ready replica in EDS")
            wait_until(lambda: any(r["weights"].get("gpu") for r in get(f"{admin}/status")[1]["routes"]), 20,
                     "the gpu pool's weight back after the undrain")
            # 3. the watch misses a pool's removal and its resourceVersion expires: 410, relist
            before = load.outcomes["ok"]
            api.hold_events = True
            api.apply(slice_of(gpu, "g", ready=False, serving=True, terminating=True))
            api.compact()
            api.hold_events = False
            api.break_watches()
            wait_until(lambda: not in_envoy(gpu), 20, "the gpu pool drained after the relist")
            gpu.stop()
            api.delete("inference", "triton-gpu-g")
            wait_until(lambda: load.outcomes["ok"] >= before + 50, 30, "load after the churn")
        assert load.failures == [], f"{len(load.failures)} failed of {sum(load.outcomes.values())}: {load.failures[:5]}"
        assert load.outcomes["ok"] >= 150
        status, health = get(f"{admin}/healthz")
        assert status == 200 and health["serving_replicas"] == {"cpu": 2}, health
        watch_requests = [r for r in api.requests if "watch=true" in r]
        lists = [r for r in api.requests if "watch=true" not in r]
        assert len(lists) == 2, "one list at start, one after the 410"
        assert len(watch_requests) >= 3
    finally:
        if envoy is not None:
            envoy.stop()
        if control is not None and control.poll() is None:
            control.terminate()
            try:
                control.wait(timeout=10)
            except subprocess.TimeoutExpired:
                control.kill()
                control.wait(timeout=5)
        for pool in started:
            pool.stop()
        api.stop()
