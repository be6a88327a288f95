"""What a replica really serves in the cluster (issue 13, high item): its Triton's repository index
(``POST /v2/repository/index``), not the pool's configured model list.  A serving replica whose
index lacks one of its pool's models, or shows it not READY, is taken out of service by the
EndpointSlice discovery (control/discovery_k8s.py).  Pure gate and probe first, then the real
``kubernetes`` client on the local API server with a real tritonserver."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from control.discovery_k8s import (
    EndpointSliceDiscovery,
    RepositoryIndexProbe,
    SliceSelection,
    discovery_api,
    gate_by_index,
    models_ready,
)
from control.ports import Replica, ReplicaSet
from tests.deploy.fake_apiserver import FakeApiServer, endpoint_slice, pod_endpoint

# Triton 2.51's answer for a repository with `alpha` loaded and `beta` unloaded (the shape the
# integration test below reads from the real server; right after the unload beta shows UNLOADING).
INDEX = [{"name": "alpha", "version": "1", "state": "READY"},
         {"name": "beta", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]


def replica(host: str, *, ready: bool = True, terminating: bool = False, pool: str = "cpu") -> Replica:
    return Replica(pool, host, 8000, 8001, f"http://{host}:8002/metrics", ready=ready, terminating=terminating)


def test_only_ready_models_count_as_served() -> None:
    assert models_ready(INDEX) == {"alpha"}
    assert models_ready([{"name": "alpha", "version": "1", "state": "UNAVAILABLE"},
                         {"name": "alpha", "version": "2", "state": "READY"}]) == {"alpha"}
    with pytest.raises(ValueError, match="not a JSON list"):
        models_ready({"name": "fake"})


@pytest.mark.parametrize("served,serving,why", [
    (frozenset({"alpha", "beta"}), True, None),
    (frozenset({"alpha"}), False, "not READY in its repository index: beta"),
    ("repository index not read yet", False, "repository index not read yet"),
], ids=["all-ready", "one-missing-or-not-ready", "never-read"])
def test_a_replica_serves_only_when_its_index_shows_every_model_of_its_pool(served, serving, why) -> None:
    gated = gate_by_index(ReplicaSet({"cpu": (replica("10.0.0.1"),)}), {"cpu": ("alpha", "beta")},
                          {("10.0.0.1", 8000): served})
    (r,) = gated.by_pool["cpu"]
    assert r.serving is serving and r.detail.get("repository_index") == why


def test_pools_without_a_model_list_and_replicas_not_serving_are_left_alone() -> None:
    replicas = ReplicaSet({"cpu": (replica("10.0.0.1", terminating=True), replica("10.0.0.2", ready=False)),
                           "gpu": (replica("10.0.0.3", pool="gpu"),)})
    assert gate_by_index(replicas, {"cpu": ("alpha",)}, {}) == replicas


def test_the_probe_reads_new_replicas_at_once_then_every_refresh_and_keeps_the_last_answer() -> None:
    answers: dict[str, object] = {"10.0.0.1": INDEX}
    calls: list[str] = []

    def fetch(r: Replica, timeout_s: float) -> object:
        calls.append(r.host)
        answer = answers[r.host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    probe = RepositoryIndexProbe({"cpu": ("alpha",)}, refresh_s=10.0, fetch=fetch)
    one = ReplicaSet({"cpu": (replica("10.0.0.1"),)})
    assert probe.apply(one).serving("cpu") == ()  # never read: not routed
    probe.refresh(one, now=0.0)
    assert [r.host for r in probe.apply(one).serving("cpu")] == ["10.0.0.1"]
    probe.refresh(one, now=5.0)
    assert calls == ["10.0.0.1"], "read again before refresh_s"
    answers["10.0.0.1"] = ConnectionRefusedError("sidecar restarting")
    probe.refresh(one, now=10.0)
    assert calls == ["10.0.0.1", "10.0.0.1"]
    assert [r.host for r in probe.apply(one).serving("cpu")] == ["10.0.0.1"], "a failed read keeps the last answer"
    answers["10.0.0.2"] = OSError("timed out")
    two = ReplicaSet({"cpu": (replica("10.0.0.1"), replica("10.0.0.2"))})
    probe.refresh(two, now=11.0)
    (gated,) = [r for r in probe.apply(two).by_pool["cpu"] if r.host == "10.0.0.2"]
    assert not gated.serving and gated.detail["repository_index"].startswith("repository index unreadable")
    probe.refresh(ReplicaSet({"cpu": (replica("10.0.0.2"),)}), now=12.0)
    assert ("10.0.0.1", 8000) not in probe._served, "a replica gone is forgotten"


# -- the real client, the local API server and a real tritonserver ------------------------------------

_MODEL_PY = '''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
                for r in requests]
'''


def _repository(root: Path, models: tuple[str, ...]) -> Path:
    for name in models:
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(_MODEL_PY)
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            'input [{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
            'output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }]\n')
    return root


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.integration
def test_the_discovery_routes_a_replica_only_for_what_its_real_triton_serves(tmp_path: Path) -> None:
    from fleet.triton_process import TritonProcess, prepare_backend_dir

    class ExplicitTriton(TritonProcess):
        """Explicit model control, so a model can be unloaded while the server keeps running."""

        def command(self) -> list[str]:
            return [*super().command(), "--model-control-mode=explicit", "--load-model=*"]

    triton = ExplicitTriton("index-test", _repository(tmp_path / "models", ("alpha", "beta")),
                            prepare_backend_dir(tmp_path / "backends"), tmp_path / "triton.log")
    server = FakeApiServer().start()
    discoveries: list[EndpointSliceDiscovery] = []
    try:
        triton.start()
        triton.wait_ready(timeout_s=90)
        port = triton.ports
        server.apply(endpoint_slice("triton-cpu-abc", pool="cpu", endpoints=[pod_endpoint("127.0.0.1", "triton-cpu-0")],
                                    ports={"http": port.http, "grpc": port.grpc, "http-metrics": port.metrics}))

        def discovery(models: tuple[str, ...]) -> EndpointSliceDiscovery:
            d = EndpointSliceDiscovery(discovery_api(host=server.url), SliceSelection(), max_backoff_s=0.2,
                                       index_probe=RepositoryIndexProbe({"cpu": models}, refresh_s=0.2)).start()
            discoveries.append(d)
            assert d.wait_synced(10)
            return d

        both = discovery(("alpha", "beta"))
        _wait(lambda: len(both.read().serving("cpu")) == 1, 10, "the replica serving alpha and beta")
        # fleet.yaml says the pool serves a model its repository does not have.
        lacking = discovery(("alpha", "beta", "gamma"))
        _wait(lambda: lacking.index_probe.reads > 0, 10, "the index read")  # type: ignore[union-attr]
        (r,) = lacking.read().by_pool["cpu"]
        assert not r.serving and r.detail["repository_index"] == "not READY in its repository index: gamma"
        # A model the server shows, but not READY.
        assert requests.post(f"http://{triton.http_url}/v2/repository/models/beta/unload", timeout=30).status_code == 200
        index = requests.post(f"http://{triton.http_url}/v2/repository/index", json={}, timeout=5).json()
        states = {e["name"]: e["state"] for e in index}
        assert states["alpha"] == "READY" and states["beta"] in ("UNLOADING", "UNAVAILABLE"), states
        _wait(lambda: both.read().serving("cpu") == (), 10, "the replica taken out once beta is unloaded")
        assert both.read().by_pool["cpu"][0].detail["repository_index"] == "not READY in its repository index: beta"
    finally:
        for d in discoveries:
            d.stop()
        server.stop()
        triton.stop()


# -- the mesh lets the control server read the index -------------------------------------------------

def index_read_problems(docs: list[dict]) -> list[str]:
    """The control server's reads of Triton's index pass Istio's AuthorizationPolicies (ALLOW rules
    on Triton: the xds-control principal, POST /v2/repository/index on 8000) and the NetworkPolicy."""
    from tests.deploy.conftest import find

    problems = []
    rules = [rule for p in find(docs, "AuthorizationPolicy")
             if (p["spec"].get("selector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "triton"
             for rule in p["spec"].get("rules", [])]
    if not any("cluster.local/ns/inference/sa/xds-control" in s["source"].get("principals", [])
               and any("8000" in t["operation"].get("ports", []) and "POST" in t["operation"].get("methods", ["POST"])
                       and "/v2/repository/index" in t["operation"].get("paths", ["/v2/repository/index"])
                       for t in rule.get("to", []))
               for rule in rules for s in rule.get("from", [])):
        problems.append("Istio denies the control server's POST /v2/repository/index on Triton's 8000")
    ingress = [r for n in find(docs, "NetworkPolicy", "triton") for r in n["spec"].get("ingress", [])]
    if not any(any((f.get("podSelector") or {}).get("matchLabels") == {"app.kubernetes.io/name": "xds-control"}
                   for f in r.get("from", [])) and 8000 in {p["port"] for p in r.get("ports", [])} for r in ingress):
        problems.append("NetworkPolicy triton drops the control server's connections to 8000")
    return problems


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_mesh_lets_the_control_server_read_each_index(env: str, documents) -> None:
    assert index_read_problems(documents[env]) == []


def test_without_the_policies_the_index_reads_are_refused(documents) -> None:
    import copy

    docs = copy.deepcopy(documents["prod"])
    for d in docs:
        if d["kind"] == "AuthorizationPolicy":
            d["spec"]["rules"] = [r for r in d["spec"].get("rules", [])
                                  if "cluster.local/ns/inference/sa/xds-control" not in str(r.get("from"))]
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "triton":
            d["spec"]["ingress"] = [r for r in d["spec"]["ingress"] if "xds-control" not in str(r.get("from"))]
    assert index_read_problems(docs) == ["Istio denies the control server's POST /v2/repository/index on Triton's 8000",
                                         "NetworkPolicy triton drops the control server's connections to 8000"]
