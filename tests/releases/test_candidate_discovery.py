"""Candidate replicas discovered from their EndpointSlices (releases/discover.py), with the real
``kubernetes`` client against the local API server of the deployment tests (list with a label
selector, as the API serves it)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from control.discovery_k8s import discovery_api
from releases.discover import CandidateDiscoveryError, discover_candidates
from tests.deploy.fake_apiserver import FakeApiServer, endpoint_slice, pod_endpoint

ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits_classifier"


def candidate_slice(name: str, version: str, endpoints: list, pool: str = "cpu", model: str = MODEL) -> dict:
    s = endpoint_slice(name, pool=pool, endpoints=endpoints, service=f"triton-{pool}-{model}-v{version}",
                       ports={"http": 9100, "grpc": 9101, "http-metrics": 9102})
    s["metadata"]["labels"].update({"app.kubernetes.io/name": "triton-candidate",
                                    "inference.platform/model": model, "inference.platform/version": version})
    return s


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    server.apply(endpoint_slice("triton-cpu-a", pool="cpu", endpoints=[pod_endpoint("10.0.0.1", "stable-0")]))
    server.apply(candidate_slice("cand-v2-a", "2", [pod_endpoint("10.0.1.1", "cand-0"),
                                                    pod_endpoint("10.0.1.2", "cand-1", terminating=True),
                                                    pod_endpoint("10.0.1.3", "cand-2", ready=False)]))
    server.apply(candidate_slice("cand-v2-gpu", "2", [pod_endpoint("10.0.2.1", "cand-gpu-0")], pool="gpu"))
    server.apply(candidate_slice("cand-v3-a", "3", [pod_endpoint("10.0.3.1", "cand-v3-0")]))
    server.apply(candidate_slice("other-v2", "2", [pod_endpoint("10.0.4.1", "other-0")], model="text_embedding"))
    yield server
    server.stop()


def test_only_serving_candidates_of_the_model_and_version_become_endpoints(apiserver) -> None:
    found = discover_candidates(discovery_api(host=apiserver.url), MODEL, "2")
    assert [(e.pool, e.host, e.http_port, e.grpc_port, e.metrics_url) for e in found] == [
        ("cpu", "10.0.1.1", 9100, 9101, "http://10.0.1.1:9102/metrics"),
        ("gpu", "10.0.2.1", 9100, 9101, "http://10.0.2.1:9102/metrics")]  # not stable, v3, terminating, unready


def test_no_serving_candidate_is_a_clear_error(apiserver) -> None:
    with pytest.raises(CandidateDiscoveryError, match="no serving candidate replica of digits_classifier v9"):
        discover_candidates(discovery_api(host=apiserver.url), MODEL, "9")
    apiserver.unavailable = True
    with pytest.raises(CandidateDiscoveryError, match="cannot list EndpointSlices"):
        discover_candidates(discovery_api(host=apiserver.url), MODEL, "2")


def test_releases_start_discovers_the_endpoints_instead_of_taking_them(apiserver, tmp_path: Path) -> None:
    spec = tmp_path / "r.yaml"
    spec.write_text(yaml.safe_dump({"name": "r", "model": MODEL, "stable": {"version": 1}, "candidate": {"version": 2}}))

    def start(*extra: str) -> subprocess.CompletedProcess[str]:
        # --admin points nowhere: a start that got past discovery fails to reach the server (exit 1)
        return subprocess.run([sys.executable, "-m", "releases", "start", str(spec), "--admin", "http://127.0.0.1:9",
                               "--discover-candidates", "--kube-host", apiserver.url, *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    done = start()
    assert "discovered: cpu=10.0.1.1:9100:9101, gpu=10.0.2.1:9100:9101" in done.stdout, done.stderr
    assert "cannot reach the control server" in done.stderr
    both = start("--endpoint", "cpu=127.0.0.1:1:2")
    assert both.returncode == 2 and "either --endpoint or --discover-candidates" in both.stderr
    wrong_ns = start("--kube-namespace", "elsewhere")
    assert wrong_ns.returncode == 1 and "no serving candidate replica" in wrong_ns.stderr
