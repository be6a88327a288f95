"""The pre-flight gate: a candidate whose profile regresses beyond the release's threshold is
stopped before any traffic (the control server is never called)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

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
