from __future__ import annotations

from pathlib import Path

import pytest

from profiler.profile_io import profile_document, sha256_of, this_machine, write_profile
from router_lib.config import ConfigError, load_profile


def _doc(**over):  # type: ignore[no-untyped-def]
    kw = dict(model="text_embedding", accelerator="cpu", instance_type="c7g.xlarge", instances_per_replica=2,
              max_batch_size=32, latency_ms_by_batch={8: 40.0, 1: 10.0}, p99_over_p50=1.7, machine="here",
              triton_version="2.51.0", model_version="1", artifact_sha256="f" * 64, source="test", date="2026-11-28")
    kw.update(over)
    return profile_document(**kw)


def test_written_profile_loads_with_the_routers_loader(tmp_path: Path) -> None:
    path = tmp_path / "text_embedding.cpu.yaml"
    written = write_profile(path, _doc())
    assert load_profile(path) == written
    assert written.provenance.kind == "measured"
    assert written.provenance.triton_version == "2.51.0"
    assert written.provenance.artifact_sha256 == "f" * 64
    assert list(written.latency_ms_by_batch) == [1, 8]


def test_an_invalid_profile_is_never_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("old: content\n")
    with pytest.raises(ConfigError, match="max_batch_size"):
        write_profile(path, _doc(latency_ms_by_batch={64: 1.0}))
    assert path.read_text() == "old: content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.yaml"]


def test_machine_field_says_what_ran_and_that_it_is_not_the_priced_instance() -> None:
    text = this_machine("c7g.xlarge")
    assert "NOT a c7g.xlarge" in text and "cores" in text


def test_sha256_of_file(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    assert sha256_of(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
