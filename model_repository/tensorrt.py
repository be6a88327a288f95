"""TensorRT engine build step for the GPU target.

Where TensorRT is present (the ``tensorrt`` Python package, or ``trtexec`` on PATH) the ONNX
artifacts are built into ``.plan`` engines; everywhere else the step says ``skipped: <reason>``
and the GPU configs keep pointing at an engine the GPU image's build stage must produce.  Nothing
is faked: no placeholder engine file is written.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Shapes the engines are built for: (min, opt, max) per dynamic input.
PROFILES: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]] = {
    "text_embedding.onnx": {
        "input_ids": ((1, 16), (8, 64), (32, 256)),
        "attention_mask": ((1, 16), (8, 64), (32, 256)),
    },
}


@dataclass(frozen=True)
class Toolchain:
    kind: str  # "python" | "trtexec" | "none"
    reason: str = ""
    trtexec: str | None = None


def find_toolchain() -> Toolchain:
    if importlib.util.find_spec("tensorrt") is not None:
        return Toolchain("python")
    trtexec = shutil.which("trtexec")
    if trtexec:
        return Toolchain("trtexec", trtexec=trtexec)
    return Toolchain("none", reason="no TensorRT here: neither the tensorrt Python package nor trtexec was found")


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in s)


ShapeProfile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def trtexec_command(trtexec: str, onnx_path: Path, engine_path: Path, fp16: bool = True,
                    shapes: ShapeProfile | None = None) -> list[str]:
    """The trtexec command line that builds one engine (optimisation profile ``shapes``, by default
    PROFILES' entry for the file: an onboarded model brings its own)."""
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--skipInference"]
    prof = shapes if shapes is not None else PROFILES.get(onnx_path.name)
    if prof:
        cmd.append("--minShapes=" + ",".join(f"{n}:{_shape(s[0])}" for n, s in prof.items()))
        cmd.append("--optShapes=" + ",".join(f"{n}:{_shape(s[1])}" for n, s in prof.items()))
        cmd.append("--maxShapes=" + ",".join(f"{n}:{_shape(s[2])}" for n, s in prof.items()))
    if fp16:
        cmd.append("--fp16")
    return cmd


def build_with_python_api(onnx_path: Path, engine_path: Path, fp16: bool = True,
                          shapes: ShapeProfile | None = None) -> None:  # pragma: no cover - needs a GPU
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    prof = shapes if shapes is not None else PROFILES.get(onnx_path.name)
    if prof:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in prof.items():
            p.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(p)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path.write_bytes(bytes(engine))


def build_engines(models_dir: Path, toolchain: Toolchain | None = None) -> str:
    tc = toolchain or find_toolchain()
    if tc.kind == "none":
        return f"skipped: {tc.reason}"
    built = []
    onboarded, not_for_gpu = onboarded_shapes()
    for onnx_path in sorted(models_dir.glob("*.onnx")):
        if onnx_path.name in not_for_gpu:
            continue
        engine = onnx_path.with_suffix(".plan")
        shapes = onboarded.get(onnx_path.name)
        if tc.kind == "python":
            build_with_python_api(onnx_path, engine, shapes=shapes)
        else:
            assert tc.trtexec
            subprocess.run(trtexec_command(tc.trtexec, onnx_path, engine, shapes=shapes), check=True)
        built.append(engine.name)
    return "built " + ", ".join(built)


def onboarded_shapes() -> tuple[dict[str, ShapeProfile], set[str]]:
    """For models onboarded with ``python -m model_repository add``: the engine shapes of each
    artifact (batch 1, min(8, max), max; fixed dimensions after the batch axis), and the artifacts
    that get no engine (placed on the host CPU of GPU instances, or with a dynamic non-batch
    dimension whose range only the model's owner knows)."""
    from model_repository.definitions import load_models

    shapes: dict[str, ShapeProfile] = {}
    skip: set[str] = set()
    for m in load_models().values():
        if m.origin == "built-in":
            continue
        step = m.accelerated
        if "gpu" in m.host_cpu_on or any(-1 in t.dims for t in step.inputs):
            skip.add(step.artifact)
            continue
        b = m.max_batch_size
        shapes[step.artifact] = {t.name: ((1, *t.dims), (min(8, b), *t.dims), (b, *t.dims)) for t in step.inputs}
    return shapes, skip
