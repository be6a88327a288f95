from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from profiler.__main__ import main
from profiler.diff import IncomparableProfiles, diff_profiles
from router_lib.domain import Accelerator
from tests.profiler.builders import profile


def test_identical_profiles_have_no_regression() -> None:
    assert diff_profiles(profile(), profile()).regressions == ()


@pytest.mark.parametrize(("candidate", "metric"), [
    (profile({1: 12.0, 8: 40.0, 32: 160.0}), "latency_ms[batch 1]"),
    (profile(tail=1.8), "p99_over_p50"),
    (profile({1: 10.0, 8: 40.0, 32: 200.0}), "throughput_per_replica_per_s"),
], ids=["slower-batch-1", "fatter-tail", "lower-full-batch-throughput"])
def test_a_change_beyond_the_threshold_is_a_regression(candidate, metric: str) -> None:  # type: ignore[no-untyped-def]
    assert metric in {c.metric for c in diff_profiles(profile(), candidate, 0.10).regressions}


def test_faster_is_never_a_regression_and_small_changes_pass() -> None:
    assert diff_profiles(profile(), profile({1: 5.0, 8: 20.0, 32: 80.0}, tail=1.2)).regressions == ()
    assert diff_profiles(profile(), profile({1: 10.5, 8: 41.0, 32: 165.0})).regressions == ()


def test_batch_sizes_measured_by_only_one_side_are_compared_by_interpolation() -> None:
    # Candidate measured batch 4 only; baseline interpolates 10 + 30 * 3/7 = 22.86 ms there.
    d = diff_profiles(profile(), profile({1: 10.0, 4: 30.0, 8: 40.0, 32: 160.0}))
    row = next(c for c in d.changes if c.metric == "latency_ms[batch 4]")
    assert row.baseline == pytest.approx(10 + 30 * 3 / 7)
    assert row.regression


def test_different_models_cannot_be_compared() -> None:
    with pytest.raises(IncomparableProfiles):
        diff_profiles(profile(), profile(accelerator=Accelerator.GPU))


def test_changed_artifact_is_noted_not_failed() -> None:
    d = diff_profiles(profile(), profile(sha="b" * 64))
    assert d.regressions == () and any("artifact_sha256" in n for n in d.notes)


def _write(path: Path, latency: dict[int, float], model: str = "text_embedding") -> Path:
    path.write_text(yaml.safe_dump({
        "model": model, "accelerator": "cpu", "instance_type": "c7g.xlarge", "instances_per_replica": 2,
        "max_batch_size": 32, "latency_ms_by_batch": latency, "p99_over_p50": 1.5,
        "provenance": {"kind": "measured", "date": "2026-11-28", "machine": "test"}}))
    return path


def test_cli_exit_codes_0_ok_1_regression_2_incomparable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path / "a.yaml", {1: 10.0, 32: 160.0})
    same = _write(tmp_path / "b.yaml", {1: 10.2, 32: 158.0})
    worse = _write(tmp_path / "c.yaml", {1: 13.0, 32: 160.0})
    other = _write(tmp_path / "d.yaml", {1: 1.0}, model="digits_classifier")
    assert main(["diff", str(base), str(same)]) == 0
    assert main(["diff", str(base), str(worse)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["diff", str(base), str(worse), "--threshold", "0.5"]) == 0
    assert main(["diff", str(base), str(other)]) == 2
    assert main(["diff", str(base), str(tmp_path / "missing.yaml")]) == 2
