"""A local tritonserver serving one model (and its composing models) for the profiler.

The profiler benchmarks whatever answers at a gRPC URL; this module is the edge that starts one
on 127.0.0.1 when no remote URL is given.  The repository comes from ``model_repository`` exactly
as the fleet writes it, so the profile describes the configuration the CPU pool really serves.
A compiled variant is served by pointing the model's artifact name at the variant's file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet.triton_process import GrpcTls, TritonProcess, prepare_backend_dir
from model_repository.definitions import ModelDefinition
from model_repository.triton_config import Target, write_repository


def artifacts_with_variant(artifacts: Path, model: ModelDefinition, variant_path: Path | None, dest: Path) -> Path:
    """A folder of links to ``artifacts`` where the model's ONNX artifact is ``variant_path``."""
    if variant_path is None:
        return artifacts
    dest.mkdir(parents=True, exist_ok=True)
    for src in artifacts.iterdir():
        if src.is_file():
            os.symlink(src.resolve(), dest / src.name)
    target = dest / model.accelerated.artifact
    target.unlink()
    os.symlink(variant_path.resolve(), target)
    return dest


@contextmanager
def local_triton(model: ModelDefinition, artifacts: Path, instances: int,
                 variant_path: Path | None = None, workdir: Path | None = None,
                 grpc_tls: GrpcTls | None = None) -> Iterator[TritonProcess]:
    """Start a tritonserver serving ``model`` on the CPU target with ``instances`` model instances;
    yield it ready; stop it (and its Python-backend stubs) on exit."""
    with tempfile.TemporaryDirectory(prefix="profiler-", dir=workdir) as tmp:
        root = Path(tmp)
        arts = artifacts_with_variant(artifacts, model, variant_path, root / "artifacts")
        repo = write_repository(root / "repo", [(model, Target("cpu", instances=instances))], arts)
        server = TritonProcess(f"profiler-{model.name}", repo, prepare_backend_dir(root / "backends"),
                               root / "triton.log", grpc_tls=grpc_tls)
        server.start()
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()
