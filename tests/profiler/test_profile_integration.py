"""The profiler against a real tritonserver on loopback (tiny sweeps: this machine has 2 shared
cores).  Needs the models built (``make models``)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import yaml

from benchmarks.profiler.plain_loop import plain_loop_requests_per_s
from model_repository.definitions import load_models
from profiler.__main__ import main
from profiler.bench import closed_loop
from profiler.inputs import output_names, request_sets
from profiler.local_triton import local_triton
from router_lib.config import load_fleet, load_profile

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_profiling_the_cpu_pool_writes_profiles_the_router_loads(artifacts: Path, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for ref in ("text_embedding.gpu.yaml", "text_embedding.inferentia.yaml", "digits_classifier.gpu.yaml"):
        (profiles / ref).write_text((ROOT / "profiles" / ref).read_text())
    rc = main(["profile", "--model", "digits_classifier", "--model", "text_embedding", "--artifacts", str(artifacts),
               "--instances", "1", "--batch-sizes", "1,2", "--concurrency", "1,2", "--warmup-s", "0.3",
               "--measure-s", "0.7", "--min-requests", "0", "--profiles-dir", str(profiles),
               "--results", str(tmp_path / "results"), "--name", "tiny"])
    assert rc == 0
    for name in ("digits_classifier", "text_embedding"):
        p = load_profile(profiles / f"{name}.cpu.yaml")
        assert p.provenance.kind == "measured" and p.provenance.triton_version == "2.51.0"
        assert "NOT a c7g.xlarge" in p.provenance.machine
        assert len(p.provenance.artifact_sha256) == 64
        assert sorted(p.latency_ms_by_batch) == [1, 2] and all(v > 0 for v in p.latency_ms_by_batch.values())
        assert p.p99_over_p50 >= 1.0
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": "profiles",
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1, "mode": "real"}],
    }))
    fleet = load_fleet(fleet_file, tuple(load_models()))
    assert fleet.pool("cpu").models == ("digits_classifier", "text_embedding")
    assert (tmp_path / "results" / "tiny.png").stat().st_size > 10_000
    assert "server queue ms" in (tmp_path / "results" / "tiny.md").read_text()


def test_a_rejected_variant_is_not_profiled(artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="int8_per_tensor is not usable"):
        main(["profile", "--model", "text_embedding", "--artifacts", str(artifacts), "--variant", "int8_per_tensor",
              "--variants-dir", str(tmp_path), "--profiles-dir", str(tmp_path)])
    assert "rejected: fails the accuracy gate: min cosine" in capsys.readouterr().out
    assert not (tmp_path / "text_embedding.cpu.yaml").exists()


def test_profiler_throughput_roughly_agrees_with_a_plain_loop(artifacts: Path) -> None:
    """Sanity only: catches counting bugs (a factor of 2), not noise.  The 15% comparison is
    benchmarks/profiler/vs_plain_loop.py, with longer rounds; per-round differences of 20-60% are
    normal on this shared machine."""
    model = load_models()["text_embedding"]
    sets = request_sets(model, artifacts, 1)
    ours, plain = [], []
    with local_triton(model, artifacts, 2) as server:
        clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(2)]
        for _ in range(3):
            lat, errors, window = closed_loop(clients, model.name, sets, output_names(model), 2, 0.3, 1.0)
            assert errors == 0
            ours.append(len(lat) / window)
            plain.append(plain_loop_requests_per_s(server.grpc_url, model.name, sets, 2, 1.0, warmup_s=0.3))
        for c in clients:
            c.close()
    ratio = statistics.median(ours) / statistics.median(plain)
    assert 0.5 < ratio < 2.0, (ours, plain)


def test_a_remote_triton_is_profiled_as_it_is_configured(artifacts: Path, tmp_path: Path) -> None:
    """--url: nothing is started; the instance count and versions come from the server itself."""
    model = load_models()["digits_classifier"]
    with local_triton(model, artifacts, instances=2) as server:
        rc = main(["profile", "--model", "digits_classifier", "--artifacts", str(artifacts), "--url", server.grpc_url,
                   "--instances", "1", "--batch-sizes", "1", "--concurrency", "1", "--warmup-s", "0.2",
                   "--measure-s", "0.5", "--min-requests", "0", "--profiles-dir", str(tmp_path)])
    assert rc == 0
    p = load_profile(tmp_path / "digits_classifier.cpu.yaml")
    assert p.instances_per_replica == 2  # the server's config, not --instances (which only starts local ones)
    assert server.grpc_url in p.provenance.source
