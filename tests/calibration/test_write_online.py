"""``python -m profiler write-online``: a calibration written back as a profile the router loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from control.status import render_status
from profiler.__main__ import main
from profiler.online import OnlineProfileError, document, profile_from_record
from router_lib.calibration import CalibrationSettings
from router_lib.config import load_profiles
from tests.calibration.test_calibration_loop import TRUE_CPU, FakeStats, make_loop, ticks
from tests.router_lib.builders import CPU, EMBED, THREE_POOLS


@pytest.fixture
def calibrated(tmp_path: Path):  # noqa: ANN201
    """A loop whose CPU pool calibrated confidently; its /status saved; the fleet's profiles on disk."""
    loop, store, clock = make_loop(FakeStats())
    view = ticks(loop, clock, 6)
    status = tmp_path / "status.json"
    status.write_text(json.dumps(render_status(THREE_POOLS, view, None)))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for (model, acc), p in THREE_POOLS.profiles.items():
        (profiles / f"{model}.{acc.value}.yaml").write_text(yaml.safe_dump(document(p)))
    return status, profiles, store


def test_a_confident_calibration_is_written_back_and_replaces_the_offline_profile(calibrated) -> None:  # noqa: ANN001
    status, profiles, _ = calibrated
    rc = main(["write-online", "--model", EMBED, "--pool", "cpu", "--status", str(status), "--profiles-dir",
               str(profiles), "--machine", "test machine", "--allow-emulated"])
    assert rc == 0
    loaded = load_profiles(profiles)[(EMBED, CPU)]  # the .online.yaml takes the offline one's place
    assert loaded.provenance.kind == "online" and loaded.provenance.machine == "test machine"
    assert "EMULATED pool" in loaded.provenance.source and loaded.provenance.date
    prior = THREE_POOLS.profiles[(EMBED, CPU)]
    assert loaded.latency_ms(8) == pytest.approx(TRUE_CPU(8) / 1.003, rel=0.05)  # mean -> p50 (tail 1.2)
    assert (loaded.max_batch_size, loaded.instances_per_replica) == (prior.max_batch_size, prior.instances_per_replica)
    assert (profiles / f"{EMBED}.cpu.online.yaml").read_text().startswith("# Calibrated online")


def test_an_emulated_pool_or_an_unconfident_calibration_is_refused_with_the_reason(calibrated) -> None:  # noqa: ANN001
    status, profiles, _ = calibrated
    with pytest.raises(SystemExit, match="pool 'cpu' is emulated"):
        main(["write-online", "--model", EMBED, "--pool", "cpu", "--status", str(status), "--profiles-dir",
              str(profiles)])
    with pytest.raises(SystemExit, match="embed on gpu is not confident yet"):
        main(["write-online", "--model", EMBED, "--pool", "gpu", "--status", str(status), "--profiles-dir",
              str(profiles), "--allow-emulated"])
    with pytest.raises(SystemExit, match="no calibration of model 'nope'"):
        main(["write-online", "--model", "nope", "--pool", "cpu", "--status", str(status), "--profiles-dir",
              str(profiles)])
    assert not list(profiles.glob("*.online.yaml"))


def test_the_state_record_gives_the_same_profile_as_status(calibrated) -> None:  # noqa: ANN001
    status, _, store = calibrated
    from_record = profile_from_record(store.record, THREE_POOLS, EMBED, "cpu", "m", True, CalibrationSettings())
    entry = next(e for e in json.loads(status.read_text())["calibration"] if e["pools"] == ["cpu"])
    for b, v in entry["profile"]["latency_ms_by_batch"].items():
        assert from_record.latency_ms(int(b)) == pytest.approx(v, rel=1e-3)
    with pytest.raises(OnlineProfileError, match="holds no calibration"):
        profile_from_record({}, THREE_POOLS, EMBED, "cpu", "m", True, CalibrationSettings())
