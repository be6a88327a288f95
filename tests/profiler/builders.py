"""Small builders for profiler tests: points, profiles, tiny ONNX models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from profiler.analysis import Point, ServerTimes
from router_lib.domain import Accelerator, Profile, Provenance


def point(batch: int = 1, concurrency: int = 1, p50: float = 10.0, p99: float = 12.0, requests: int = 100,
          measure_s: float = 1.0, errors: int = 0) -> Point:
    times = ServerTimes(requests, 0.1, 9.0, 8.5, requests, requests * batch)
    return Point(batch, concurrency, measure_s, requests, errors, p50, p50, p99, p99, p50, {"m": times})


def profile(latency: dict[int, float] | None = None, tail: float = 1.5, model: str = "m",
            accelerator: Accelerator = Accelerator.CPU, max_batch: int = 32, sha: str = "a" * 64) -> Profile:
    return Profile(model=model, accelerator=accelerator, instance_type="c7g.xlarge",
                   latency_ms_by_batch=latency or {1: 10.0, 8: 40.0, 32: 160.0}, instances_per_replica=2,
                   max_batch_size=max_batch, p99_over_p50=tail,
                   provenance=Provenance(kind="measured", date="2026-11-28", machine="test", artifact_sha256=sha))


def matmul_model(path: Path, rows: int = 64, cols: int = 32, seed: int = 0) -> Path:
    """x[N, rows] @ W[rows, cols] with weights of very different column scales, so per-tensor
    int8 quantisation loses the small columns (a strict gate must notice)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[:, : cols // 2] *= 1e-3  # half the outputs live at a thousandth of the others' scale
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cols])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def add_model(path: Path) -> Path:
    """No quantisable node at all."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path
