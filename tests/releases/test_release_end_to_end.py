"""Releases end to end: the real control server (its own process), real Envoy, real Triton stable
and candidate replicas, load through Envoy on every tier.

One platform for the module (one real CPU pool serving ``digits_classifier`` v1), candidates
started per test.  Each test asserts what the issue states: a slow candidate is rolled back by
the fast path within a second, a good one is promoted tier by tier, a control server SIGKILLed
mid-rollout resumes at the same step, and no client request fails throughout.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fleet.supervisor import wait_until
from local_platform.platform import LocalPlatform, PlatformPorts, http_json
from model_repository.definitions import load_models
from releases.candidates import CandidateReplicas
from releases.comparator import Comparator
from releases.load import TierLoad

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits_classifier"


def one_pool_fleet(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": str(ROOT / "profiles"),
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1,
                   "mode": "real", "models": [MODEL]}],
    }))
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory, artifacts):
    work = tmp_path_factory.mktemp("release-platform")
    p = LocalPlatform(fleet_path=one_pool_fleet(work / "fleet.yaml"), workdir=work, artifacts=artifacts,
                      ports=PlatformPorts(http=0, grpc=0), interval_s=0.5)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"].astype(np.float32)


def load_for(platform: LocalPlatform, digits: np.ndarray, **rates: float) -> TierLoad:
    def body(i: int) -> dict:
        return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32",
                            "data": digits[i % len(digits)].tolist()}]}
    url = f"http://127.0.0.1:{platform.ports.http}/v2/models/{MODEL}/infer"
    return TierLoad(url, rates, body).start()


def candidate(platform: LocalPlatform, artifacts: Path, version: str) -> CandidateReplicas:
    return CandidateReplicas(load_models()[MODEL], version, "cpu", platform.workdir / f"candidate-v{version}",
                             artifacts).start()


def release_cli(platform: LocalPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "releases", *args, "--admin", platform.admin_url],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def start(platform: LocalPlatform, tmp_path: Path, name: str, cand: CandidateReplicas, *comparator: str,
          **spec: object) -> None:
    thresholds = {"mean_regression_pct": 100, "latency_slack_ms": 25, "p95_regression_pct": None,
                  "p99_regression_pct": None, "min_judge_requests": 5, **dict(spec.pop("thresholds", {}))}  # type: ignore[call-overload]
    doc = {"name": name, "model": MODEL, "stable": {"version": 1}, "candidate": {"version": int(cand.version)},
           "steps": [20, 50, 100], "step": {"min_time_s": 2, "min_requests": 15}, "thresholds": thresholds, **spec}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    e = cand.endpoints()[0]
    metrics_port = e.metrics_url.split(":")[-1].split("/")[0]
    done = release_cli(platform, "start", str(tmp_path / f"{name}.yaml"),
                       "--endpoint", f"cpu=127.0.0.1:{e.http_port}:{e.grpc_port}:{metrics_port}", *comparator)
    assert done.returncode == 0, done.stderr


def release(platform: LocalPlatform, name: str) -> dict:
    return next(r for r in http_json(f"{platform.admin_url}/releases")["releases"] if r["name"] == name)


def test_a_slow_candidate_is_rolled_back_within_a_second_with_no_failed_request(platform, artifacts, digits, tmp_path):
    cand = candidate(platform, artifacts, "2")
    load = load_for(platform, digits, bronze=50, silver=20, gold=10)
    try:
        start(platform, tmp_path, "slow", cand)
        wait_until(lambda: release(platform, "slow")["stage"] >= 1, 30, "the slow candidate's first advance")
        assert load.versions(time.time() - 1.0)["bronze"]["2"] > 0  # the candidate really serves
        injected = time.time()
        cand.inject(delay_ms=150)
        wait_until(lambda: release(platform, "slow")["phase"] == "rolled_back", 10, "the rollback")
        r = release(platform, "slow")
        rollback = next(e for e in r["events"] if e["kind"] == "rollback")
        assert rollback["at_unix_s"] - injected < 1.0, rollback
        assert "latency" in r["rollback_reason"] and set(r["candidate_weight_pct"].values()) == {0}
        time.sleep(1.0)  # requests in flight at the rollback drain
        settled = time.time()
        time.sleep(1.0)
        assert all(set(c) == {"1"} for c in load.versions(settled).values()), load.versions(settled)
        metrics = http_json_text(f"{platform.admin_url}/metrics")
        assert 'release_rollbacks_total{model="digits_classifier",release="slow"} 1.0' in metrics
        assert release_cli(platform, "status", "slow").stdout.count("rolled_back") == 1
    finally:
        load.stop()
        cand.stop()
    assert load.failures() == []


def test_a_wrong_candidate_in_shadow_mode_is_rolled_back_and_clients_only_ever_see_stable(
        platform, artifacts, digits, tmp_path):
    cand = candidate(platform, artifacts, "4")
    stable = [f"127.0.0.1:{r.http_port}" for r in platform.supervisor.replicas()]
    comparator = Comparator(stable, [f"127.0.0.1:{e.http_port}" for e in cand.endpoints()]).start()
    load = load_for(platform, digits, bronze=30, silver=10, gold=10)
    try:
        start(platform, tmp_path, "wrong", cand, "--comparator", comparator.address,
              steps=[0, 50, 100], shadow={"mirror_percent": 100},
              step={"min_time_s": 60, "min_requests": 10},
              thresholds={"min_agreement": 0.95, "min_judge_requests": 5})
        wait_until(lambda: comparator.score_count >= 20, 20, "mirrored requests compared")
        assert comparator.score_sum / comparator.score_count > 0.99  # the same export: it agrees
        injected = time.time()
        cand.inject(perturb=1.0)
        wait_until(lambda: release(platform, "wrong")["phase"] == "rolled_back", 10, "the rollback")
        r = release(platform, "wrong")
        assert "output agreement" in r["rollback_reason"], r["rollback_reason"]
        rollback = next(e for e in r["events"] if e["kind"] == "rollback")
        assert rollback["at_unix_s"] - injected < 1.0, rollback
        assert {v for c in load.versions().values() for v in c} == {"1"}  # shadow: clients never saw v4
    finally:
        load.stop()
        comparator.stop()
        cand.stop()
    assert load.failures() == []


def test_grpc_traffic_is_mirrored_too_and_a_wrong_candidate_is_rolled_back_on_it(platform, artifacts, digits, tmp_path):
    """Only gRPC clients: the comparator's gRPC port gets Envoy's mirrored ModelInfer calls (h2), asks
    both versions over gRPC and its agreement rolls the perturbed candidate back; clients see stable."""
    cand = candidate(platform, artifacts, "5")
    stable = [f"127.0.0.1:{r.http_port}" for r in platform.supervisor.replicas()]
    stable_grpc = [f"127.0.0.1:{r.grpc_port}" for r in platform.supervisor.replicas()]
    comparator = Comparator(stable, [f"127.0.0.1:{e.http_port}" for e in cand.endpoints()], grpc_port=0,
                            stable_grpc=stable_grpc,
                            candidate_grpc=[f"127.0.0.1:{e.grpc_port}" for e in cand.endpoints()]).start()

    def body(i: int) -> dict:
        return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32",
                            "data": digits[i % len(digits)].tolist()}]}
    load = TierLoad(f"127.0.0.1:{platform.ports.grpc}", {"bronze": 30, "silver": 10, "gold": 10}, body,
                    protocol="grpc", model=MODEL).start()
    try:
        start(platform, tmp_path, "wrong-grpc", cand, "--comparator", comparator.address,
              steps=[0, 50, 100], shadow={"mirror_percent": 100},
              step={"min_time_s": 60, "min_requests": 10},
              thresholds={"min_agreement": 0.95, "min_judge_requests": 5})
        wait_until(lambda: comparator.compared["grpc"] >= 20, 20, "mirrored gRPC requests compared")
        assert comparator.compared["http"] == 0  # every comparison came from the gRPC mirror
        assert comparator.score_sum / comparator.score_count > 0.99  # the same export: it agrees
        injected = time.time()
        cand.inject(perturb=1.0)
        wait_until(lambda: release(platform, "wrong-grpc")["phase"] == "rolled_back", 10, "the rollback")
        r = release(platform, "wrong-grpc")
        assert "output agreement" in r["rollback_reason"], r["rollback_reason"]
        rollback = next(e for e in r["events"] if e["kind"] == "rollback")
        assert rollback["at_unix_s"] - injected < 1.0, rollback
        assert {v for c in load.versions().values() for v in c} == {"1"}  # shadow: clients never saw v5
    finally:
        load.stop()
        comparator.stop()
        cand.stop()
    assert load.failures() == []


def test_a_tail_regression_is_rolled_back_on_p95_within_seconds_not_flushes(platform, artifacts, digits, tmp_path):
    """One execution in four +600 ms: the mean moves less (no mean gate here), p95 a lot.
    Envoy merges its histograms at each admin query, so the quantile window (2 s, or 100
    candidate requests) catches it in seconds: typically 2-4 s, about 5 s on a loaded machine.  Before (5 s flush, 10 s window spanned from the release's
    start) no quantile verdict was possible before ~7.5 s after this fault."""
    cand = candidate(platform, artifacts, "6")
    load = load_for(platform, digits, bronze=60, silver=10, gold=10)
    try:
        start(platform, tmp_path, "tail", cand, steps=[50, 100], step={"min_time_s": 60, "min_requests": 10},
              # wide: on the shared 2-core machine a healthy candidate's p95 reached 100 ms vs stable's 39
              thresholds={"mean_regression_pct": None, "p95_regression_pct": 200, "p99_regression_pct": 200,
                          "latency_slack_ms": 50})
        time.sleep(2.5)  # a healthy quantile window first: no false rollback
        assert release(platform, "tail")["phase"] == "running", release(platform, "tail")["rollback_reason"]
        injected = time.time()
        cand.inject(delay_ms=600, every=4)
        wait_until(lambda: release(platform, "tail")["phase"] == "rolled_back", 15, "the rollback")
        r = release(platform, "tail")
        assert "p95 latency" in r["rollback_reason"] or "p99 latency" in r["rollback_reason"], r["rollback_reason"]
        rollback = next(e for e in r["events"] if e["kind"] == "rollback")
        print(f"tail regression: rolled back {rollback['at_unix_s'] - injected:.2f} s after the fault: "
              f"{r['rollback_reason']}")
        # The bound is what the old path could not do (no quantile verdict before ~7.5 s); the
        # typical time is a benchmark figure, not a test bound (a loaded run took 5.04 s).
        assert rollback["at_unix_s"] - injected < 7.5, (rollback["at_unix_s"] - injected, r["rollback_reason"])
    finally:
        load.stop()
        cand.stop()
    assert load.failures() == []


def test_a_quiet_candidate_at_4_requests_per_second_is_rolled_back_within_a_second(
        platform, artifacts, digits, tmp_path):
    cand = candidate(platform, artifacts, "7")
    load = load_for(platform, digits, bronze=4, silver=10, gold=10)
    try:
        start(platform, tmp_path, "quiet", cand, steps=[100], step={"min_time_s": 60, "min_requests": 10},
              tiers=["bronze", "silver", "gold"],
              thresholds={"min_judge_requests": 10, "latency_slack_ms": 20})  # the spec's default judge minimum
        time.sleep(2.0)  # a few healthy candidate requests first
        injected = time.time()
        cand.inject(delay_ms=150)
        wait_until(lambda: release(platform, "quiet")["phase"] == "rolled_back", 10, "the rollback")
        r = release(platform, "quiet")
        rollback = next(e for e in r["events"] if e["kind"] == "rollback")
        took = rollback["at_unix_s"] - injected
        print(f"quiet candidate: rolled back {took:.2f} s after the fault: {r['rollback_reason']}")
        assert took < 1.5, (took, r["rollback_reason"])
    finally:
        load.stop()
        cand.stop()
    assert load.failures() == []


def http_json_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
        return r.read().decode()


def test_a_good_candidate_is_promoted_tier_by_tier_and_survives_a_control_server_sigkill(
        platform, artifacts, digits, tmp_path):
    cand = candidate(platform, artifacts, "3")
    load = load_for(platform, digits, bronze=40, silver=20, gold=10)
    try:
        start(platform, tmp_path, "good", cand, step={"min_time_s": 3, "min_requests": 15})
        wait_until(lambda: release(platform, "good")["stage"] == 2, 40, "stage 2 (gold joins)")
        before = release(platform, "good")
        assert before["candidate_weight_pct"] == {"bronze": 100.0, "silver": 50.0, "gold": 20.0}
        platform.kill_control_server()
        platform.start_control_server()
        after = release(platform, "good")
        assert after["stage"] == 2 and after["candidate_weight_pct"] == before["candidate_weight_pct"]
        assert platform.status()["resumed"] is not None
        wait_until(lambda: release(platform, "good")["phase"] == "promoted", 60, "promotion")
        order = [e["text"] for e in release(platform, "good")["events"] if e["kind"] == "advance"]
        assert len(order) == 4, order
        time.sleep(1.0)
        settled = time.time()
        time.sleep(1.5)
        assert all(set(c) == {"3"} for c in load.versions(settled).values()), load.versions(settled)
    finally:
        load.stop()
        cand.stop()
    assert load.failures() == []
