"""The online calibration against a real tritonserver: one replica of a real CPU pool started by
the fleet supervisor (the local fleet machinery), a few hundred requests at two batch sizes, read
through the control server's statistics adapter.  Needs the models built (``make models``)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from control.ports import Replica, ReplicaSet
from control.stats_source import TritonStatsSource
from fleet.supervisor import FleetSupervisor
from model_repository.definitions import load_models
from profiler.online import write_online_profile
from router_lib.calibration import (
    CalibrationSettings,
    EndToEnd,
    StatsReading,
    calibrated_fleet,
    calibration_of,
    observe,
)
from router_lib.config import load_fleet, load_profile, load_profiles
from router_lib.domain import Accelerator

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits_classifier"
# Lenient enough for a few hundred executions; the test's point is the estimate, not the defaults.
SETTINGS = CalibrationSettings(min_executions=100, max_relative_error=0.2, min_overhead_requests=50)


@pytest.fixture(scope="module")
def cpu_replica(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FleetSupervisor, Path]]:
    d = tmp_path_factory.mktemp("calibration-fleet")
    shutil.copytree(ROOT / "profiles", d / "profiles")
    (d / "fleet.yaml").write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": "profiles",
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1,
                   "mode": "real", "models": [MODEL]}],
    }))
    models = load_models()
    sup = FleetSupervisor(load_fleet(d / "fleet.yaml", tuple(models)), models, artifacts, d / "run")
    try:
        sup.start()
        yield sup, d
    finally:
        sup.stop()


def triton_own_means(url: str, before: dict, after: dict) -> dict[int, float]:
    """Triton's own mean compute ms per execution by batch size between two raw answers."""
    def by_batch(doc: dict) -> dict[int, tuple[int, int]]:
        out = {}
        for b in doc["model_stats"][0]["batch_stats"]:
            ns = sum(int(b[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
            out[int(b["batch_size"])] = (int(b["compute_infer"]["count"]), ns)
        return out
    a, z = by_batch(before), by_batch(after)
    return {s: (z[s][1] - a.get(s, (0, 0))[1]) / 1e6 / (z[s][0] - a.get(s, (0, 0))[0])
            for s in z if z[s][0] > a.get(s, (0, 0))[0]}


def test_the_calibration_of_a_real_cpu_replica_matches_tritons_own_mean_and_its_profile_loads(
        cpu_replica: tuple[FleetSupervisor, Path], tmp_path: Path) -> None:
    sup, fleet_dir = cpu_replica
    (info,) = sup.replicas("cpu")
    replicas = ReplicaSet({"cpu": (Replica("cpu", "127.0.0.1", info.http_port, info.grpc_port, info.metrics_url),)})
    source = TritonStatsSource({"cpu": (MODEL,)})
    stats_url = f"http://127.0.0.1:{info.http_port}/v2/models/{MODEL}/stats"
    client = httpclient.InferenceServerClient(f"127.0.0.1:{info.http_port}")
    rng = np.random.default_rng(0)
    e2e = [0.0, 0.0]  # requests, ms as this client measured them (the "edge" here)

    def send(batch: int, n: int) -> None:
        for _ in range(n):
            x = rng.random((batch, 64), dtype=np.float32) * 16
            inp = httpclient.InferInput("float_input", [batch, 64], "FP32")
            inp.set_data_from_numpy(x)
            started = time.perf_counter()
            client.infer(MODEL, [inp])
            e2e[0] += 1
            e2e[1] += (time.perf_counter() - started) * 1000.0

    def read() -> StatsReading:
        r = source.read(replicas)
        assert not source.last_errors, source.last_errors
        return StatsReading(r.by_replica, {(MODEL, "cpu"): EndToEnd(*e2e)})

    send(1, 20)  # warm-up: left out of the calibration (the first reading is the baseline)
    send(8, 20)
    before = json.loads(urllib.request.urlopen(stats_url).read())  # noqa: S310
    state = observe(None, read(), SETTINGS, time.time())
    for _ in range(4):  # a few hundred requests at two batch sizes, read as windows
        send(1, 75)
        send(8, 50)
        state = observe(state, read(), SETTINGS, time.time())
    after = json.loads(urllib.request.urlopen(stats_url).read())  # noqa: S310
    client.close()

    own = triton_own_means(stats_url, before, after)
    fleet = load_fleet(fleet_dir / "fleet.yaml", tuple(load_models()))
    prior = fleet.profile(MODEL, Accelerator.CPU)
    assert prior is not None
    cal = calibration_of(state, prior, ("cpu",), SETTINGS)
    for b, executions in ((1, 300), (8, 200)):
        est = cal.batch(b)
        assert est is not None and est.executions == executions
        assert est.observed_mean_ms == pytest.approx(own[b], rel=0.05), (b, est, own)
        # the estimate itself: the posterior, prior included (or dropped when the data contradict it)
        assert est.mean_ms == pytest.approx(own[b], rel=0.05), (b, est, own)
        assert est.confident, est
    assert cal.overhead_ms is not None and 0.0 < cal.overhead_ms < 50.0  # HTTP + client, outside Triton

    learned = calibrated_fleet(fleet, state, SETTINGS).profile(MODEL, Accelerator.CPU)
    assert learned is not None and learned.provenance.kind == "online"
    path = write_online_profile(fleet_dir / "profiles", learned)
    loaded = load_profile(path)
    assert loaded.latency_ms_by_batch == pytest.approx(
        {b: round(v, 6) for b, v in learned.latency_ms_by_batch.items()})
    assert load_profiles(fleet_dir / "profiles")[(MODEL, Accelerator.CPU)].provenance.kind == "online"
    print(f"\nTriton's mean ms {own}; calibrated {[(b.batch_size, round(b.mean_ms, 4)) for b in cal.batches]}; "
          f"overhead outside Triton {cal.overhead_ms:.3f} ms; prior p50 {dict(prior.latency_ms_by_batch)}")
