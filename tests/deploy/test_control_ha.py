"""Two control servers, one decider (control/leadership.py), end to end on loopback: both serve
ADS from one shared state file, a file lease picks the leader, one real Envoy knows both.  The
leader is SIGKILLed under load: not one request fails, the follower leads within seconds, it
serves the same snapshot the old leader did and decides the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fleet.supervisor import wait_until
from localnet.ports import free_port
from tests.deploy.fake_apiserver import FakeApiServer
from tests.deploy.test_control_k8s_integration import MODELS, Load, get, slice_of
from xds_server import EnvoyProcess
from xds_server.bootstrap import XDS_CLUSTER, envoy_bootstrap
from xds_server.testbed import ROOT, FakePool

pytestmark = pytest.mark.integration


# Locally: a file lock and a state file.  In a cluster: a Lease and a ConfigMap (here on the local
# API server); its lease duration is shortened so that the dead leader's lease expires quickly.
SHARED = {
    "file": lambda tmp_path: [f"--state={tmp_path / 'shared-state.json'}", f"--lease-file={tmp_path / 'lease'}"],
    "kubernetes": lambda tmp_path: ["--state-configmap=xds-control-state", "--k8s-lease=xds-control",
                                    "--k8s-lease-duration-s=3"],
}
TAKEOVER_BOUND_S = {"file": 2.0, "kubernetes": 6.0}  # file: the next tick; Lease: its 3 s duration + ticks


def start_control(tmp_path: Path, name: str, kubeconfig: Path, ports: dict[str, int],
                  shared: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "control", "serve", "--discovery=kubernetes", f"--kubeconfig={kubeconfig}",
         "--fleet=fleet.yaml", *SHARED[shared](tmp_path), "--k8s-namespace=inference",
         f"--identity={name}", f"--xds-port={ports[name + '_xds']}", f"--admin-port={ports[name + '_admin']}",
         f"--http-port={ports['http']}", f"--grpc-port={ports['grpc']}", "--interval-s=0.25",
         "--k8s-sync-timeout-s=5", "--release-poll-s=0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def status(ports: dict[str, int], name: str) -> dict:
    return get(f"http://127.0.0.1:{ports[name + '_admin']}/status")[1]


def weights(s: dict) -> dict[str, dict[str, int]]:
    return {f"{r['model']}/{r['tier']}": r["weights"] for r in s.get("routes", [])}


@pytest.mark.parametrize("shared", ["file", "kubernetes"])
def test_killing_the_leader_under_load_fails_no_request_and_the_follower_resumes_its_weights(tmp_path: Path,
                                                                                          shared: str):
    api = FakeApiServer().start()
    pools: list[FakePool] = []
    controls: dict[str, subprocess.Popen[bytes]] = {}
    envoy: EnvoyProcess | None = None
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": api.url}}], "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        cpu, gpu = FakePool.start("cpu", MODELS), FakePool.start("gpu", MODELS)
        pools += [cpu, gpu]
        api.apply(slice_of(cpu, "a"))
        api.apply(slice_of(gpu, "g"))
        ports = {k: free_port() for k in ("a_xds", "a_admin", "b_xds", "b_admin", "http", "grpc")}

        controls["a"] = start_control(tmp_path, "a", kubeconfig, ports, shared)
        wait_until(lambda: status(ports, "a").get("leadership", {}).get("leader") is True, 60, "a to lead")
        controls["b"] = start_control(tmp_path, "b", kubeconfig, ports, shared)
        wait_until(lambda: status(ports, "b").get("leadership", {}).get("holder") == "a", 60, "b to follow a")
        wait_until(lambda: weights(status(ports, "a")) != {}, 30, "the leader's first decision")
        wait_until(lambda: status(ports, "b").get("snapshot_version") == status(ports, "a").get("snapshot_version"),
                   30, "the follower to serve the leader's snapshot")
        assert status(ports, "b")["leadership"]["leader"] is False

        # One Envoy that knows both control servers (in the cluster: the xds-control Service).
        bootstrap = envoy_bootstrap(node_id="envoy-ha", xds_port=ports["a_xds"])
        (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER]
        xds["load_assignment"]["endpoints"][0]["lb_endpoints"].append(
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["b_xds"]}}}})
        (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(bootstrap))
        envoy = EnvoyProcess(tmp_path / "envoy.yaml", log_path=tmp_path / "envoy.log").start()
        envoy.wait_ready(timeout_s=30)

        with Load(ports["http"]) as load:
            wait_until(lambda: load.outcomes["ok"] >= 50, 30, "traffic through Envoy")
            before = weights(status(ports, "a"))
            killed_at = time.monotonic()
            os.kill(controls["a"].pid, signal.SIGKILL)
            controls["a"].wait(timeout=10)
            wait_until(lambda: status(ports, "b").get("leadership", {}).get("leader") is True, 10, "b to take over")
            takeover_s = time.monotonic() - killed_at
            # Envoy's stream is on b now (it was on a, or on b all along): b serves it the snapshot.
            wait_until(lambda: any(st.get("node") == "envoy-ha" for st in status(ports, "b").get("ads_streams", [])),
                       15, "Envoy's ADS stream on b")
            served = load.outcomes["ok"]
            wait_until(lambda: load.outcomes["ok"] >= served + 100, 30, "traffic after the takeover")
            after = weights(status(ports, "b"))
        print(f"takeover {takeover_s:.2f}s, outcomes {dict(load.outcomes)}, weights {before}")
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
        assert takeover_s < TAKEOVER_BOUND_S[shared], f"the follower took {takeover_s:.1f}s to lead"
        assert after == before, "the new leader decided other weights than the old one"
        assert status(ports, "b")["resumed"] is not None
    finally:
        if envoy is not None:
            envoy.stop()
        for process in controls.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        for pool in pools:
            pool.stop()
        api.stop()
