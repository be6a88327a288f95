from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet.supervisor import FleetSupervisor
from model_repository.definitions import load_models
from router_lib.config import load_fleet

ROOT = Path(__file__).resolve().parents[2]

# Test-only profile: long enough service times that timing can be checked within 20% at low load.
SLOW_GPU_DIGITS = {
    "model": "digits_classifier", "accelerator": "gpu", "instance_type": "g5.xlarge",
    "instances_per_replica": 1, "max_batch_size": 64, "latency_ms_by_batch": {1: 10.0, 16: 12.0, 64: 16.0},
    "provenance": {"kind": "reference", "date": "2026-11-28", "source": "test fixture",
                   "assumption": "slow on purpose so timing is measurable"},
}


@pytest.fixture(scope="session")
def test_fleet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fleetcfg")
    (d / "profiles").mkdir()
    for f in (ROOT / "profiles").glob("*.yaml"):
        if f.name != "digits_classifier.gpu.yaml":
            shutil.copy(f, d / "profiles" / f.name)
    (d / "profiles" / "digits_classifier.gpu.yaml").write_text(yaml.safe_dump(SLOW_GPU_DIGITS))
    fleet = {
        "prices": str(ROOT / "data" / "prices.yaml"),
        "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": "profiles",
        "pools": [
            {"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1, "mode": "real"},
            {"name": "inf2", "accelerator": "inferentia", "instance_type": "inf2.xlarge", "replicas": 1,
             "mode": "emulated"},
            {"name": "gpu-real", "accelerator": "gpu", "instance_type": "g5.xlarge", "replicas": 1,
             "mode": "emulated", "models": ["digits_classifier"]},
            {"name": "gpu-synth", "accelerator": "gpu", "instance_type": "g5.xlarge", "replicas": 1,
             "mode": "emulated", "outputs": "synthetic", "models": ["text_embedding"]},
        ],
    }
    path = d / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


@pytest.fixture(scope="session")
def supervisor(test_fleet_file: Path, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetSupervisor]:
    models = load_models()
    fleet = load_fleet(test_fleet_file, tuple(models))
    sup = FleetSupervisor(fleet, models, artifacts, tmp_path_factory.mktemp("fleetrun"))
    try:
        sup.start()
        yield sup
    finally:
        sup.stop()
