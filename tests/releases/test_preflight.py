"""The pre-flight gate: a candidate whose profile regresses beyond the release's threshold is
stopped before any traffic (the control server is never called)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from router_lib.domain import Profile

ROOT = Path(__file__).resolve().parents[2]
STABLE = ROOT / "profiles" / "digits_classifier.cpu.yaml"


def write_spec(tmp: Path) -> Path:
    spec = tmp / "r.yaml"
    spec.write_text(yaml.safe_dump({"name": "r", "model": "digits_classifier", "stable": {"version": 1},
                                    "candidate": {"version": 2}, "thresholds": {"p95_regression_pct": 20}}))
    return spec


def slowed(tmp: Path, factor: float) -> Path:
    doc = yaml.safe_load(STABLE.read_text())
    doc["latency_ms_by_batch"] = {b: v * factor for b, v in doc["latency_ms_by_batch"].items()}
    path = tmp / f"candidate-{factor}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start(tmp: Path, candidate: Path) -> subprocess.CompletedProcess[str]:
    # --admin points nowhere: passing the gate then fails to reach the server (exit 1, "cannot reach")
    return subprocess.run([sys.executable, "-m", "releases", "start", str(write_spec(tmp)), "--admin",
                           "http://127.0.0.1:9", "--endpoint", "cpu=127.0.0.1:1:2",
                           "--preflight", f"{STABLE}:{candidate}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_a_regressed_profile_stops_the_release_before_traffic(tmp_path: Path) -> None:
    done = start(tmp_path, slowed(tmp_path, 1.5))
    assert done.returncode == 1
    assert "REGRESSION" in done.stdout and "pre-flight FAILED" in done.stdout
    assert "cannot reach the control server" not in done.stderr  # stopped before calling it


def test_a_profile_within_the_threshold_passes_the_gate(tmp_path: Path) -> None:
    done = start(tmp_path, slowed(tmp_path, 1.1))
    assert "pre-flight passed" in done.stdout
    assert "cannot reach the control server" in done.stderr  # went on to start it


# -- the gate measures the candidate itself ---------------------------------------------------------

def profile_with(factor: float) -> Profile:
    from router_lib.config import load_profile

    p = load_profile(STABLE)
    return replace(p, latency_ms_by_batch={b: v * factor for b, v in p.latency_ms_by_batch.items()})


class FakeProfiler:
    """Profiles by URL, in order (the fake edge of ``preflight_measured``)."""

    def __init__(self, factors: dict[str, list[float]]) -> None:
        self.factors = {url: list(f) for url, f in factors.items()}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, url: str, label: str) -> Profile:
        self.calls.append((url, label))
        return profile_with(self.factors[url].pop(0))


@contextlib.contextmanager
def local_stable():  # type: ignore[no-untyped-def]
    yield "127.0.0.1:7001"


def measured(factors: dict[str, list[float]], **kw):  # type: ignore[no-untyped-def]
    from releases.preflight import preflight_measured
    from router_lib.release import CandidateEndpoint
    from router_lib.release_spec import load_release_spec

    spec = load_release_spec(write_spec(kw.pop("tmp")))
    fake = FakeProfiler(factors)
    result = preflight_measured(spec, [CandidateEndpoint("cpu", "127.0.0.1", 9100, 9101, "")], profiler=fake,
                                local_stable=local_stable, progress=lambda _: None, **kw)
    return result, fake


def test_a_slower_candidate_measured_twice_stops_the_release(tmp_path: Path) -> None:
    result, fake = measured({"127.0.0.1:7001": [1.0, 1.0], "127.0.0.1:9101": [20.0, 20.0]}, tmp=tmp_path)
    assert not result.passed and "regression confirmed by 2 pair(s)" in result.report
    assert "pre-flight FAILED" in result.report
    # stable and candidate side by side, the second pair in the other order
    assert [u for u, _ in fake.calls] == ["127.0.0.1:7001", "127.0.0.1:9101", "127.0.0.1:9101", "127.0.0.1:7001"]


def test_a_regression_that_does_not_show_again_is_noise(tmp_path: Path) -> None:
    result, fake = measured({"127.0.0.1:7001": [1.0, 1.0], "127.0.0.1:9101": [20.0, 1.02]}, tmp=tmp_path)
    assert result.passed and "did not show again" in result.report


def test_a_rise_within_the_slack_is_not_a_regression(tmp_path: Path) -> None:
    # 0.84 ms -> 1.26 ms: +50%, but below stable x 1.2 + 5 ms (the live judge's rule)
    result, fake = measured({"127.0.0.1:7001": [1.0], "127.0.0.1:9101": [1.5]}, tmp=tmp_path)
    assert result.passed and len(fake.calls) == 2 and "REGRESSION" not in result.report


def test_an_equal_candidate_passes_after_one_pair(tmp_path: Path) -> None:
    result, fake = measured({"127.0.0.1:7001": [1.0], "127.0.0.1:9101": [1.05]}, tmp=tmp_path)
    assert result.passed and len(fake.calls) == 2


def test_a_given_stable_replica_is_measured_instead_of_a_local_one(tmp_path: Path) -> None:
    result, fake = measured({"10.0.0.5:8001": [1.0], "127.0.0.1:9101": [1.0]}, tmp=tmp_path,
                            stable_urls={"cpu": "10.0.0.5:8001"})
    assert result.passed and fake.calls[0][0] == "10.0.0.5:8001"
    result, _ = measured({}, tmp=tmp_path, stable_urls={"gpu": "10.0.0.5:8001"})
    assert not result.passed and "pools without a candidate replica: gpu" in result.report


@pytest.mark.integration
def test_the_gate_profiles_a_real_candidate_and_stops_a_slow_one_before_traffic(tmp_path: Path, artifacts) -> None:
    """A real candidate replica (v2), a real stable Triton started by the gate on this CPU: healthy it
    passes; with +10 ms per execution the release stops before the control server is called."""
    from model_repository.definitions import load_models
    from releases.candidates import CandidateReplicas

    cand = CandidateReplicas(load_models()["digits_classifier"], "2", "cpu", tmp_path / "cand", artifacts).start()
    try:
        e = cand.endpoints()[0]

        def gate() -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "releases", "start", str(write_spec(tmp_path)), "--admin",
                                   "http://127.0.0.1:9", "--endpoint", f"cpu=127.0.0.1:{e.http_port}:{e.grpc_port}",
                                   "--preflight-measure", "--preflight-seconds", "0.5"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=180)
        healthy = gate()
        assert "pre-flight passed" in healthy.stdout, healthy.stdout + healthy.stderr
        assert "cannot reach the control server" in healthy.stderr  # went on to start it
        cand.inject(delay_ms=10)
        slow = gate()
        assert slow.returncode == 1, slow.stdout + slow.stderr
        assert "REGRESSION" in slow.stdout and "regression confirmed" in slow.stdout
        assert "cannot reach the control server" not in slow.stderr  # stopped before any traffic
    finally:
        cand.stop()
