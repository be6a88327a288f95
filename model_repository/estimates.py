"""Stated estimates of an onboarded model's service time where no hardware exists to measure it.

Only the CPU pool can be measured on this machine.  For GPU and Inferentia the onboarding writes a
profile the router can use at once, labelled as an estimate (``provenance.kind: reference``, its
``source`` starting with ``ESTIMATE``) with its basis, until a measurement on the hardware (or the
online calibration from live traffic) replaces it.  The formula, per accelerator:

    latency_ms(batch) = fixed_ms + batch * flops_per_item / effective_flops

``flops_per_item`` is counted from the graph (Conv, ConvTranspose, Gemm, MatMul: 2 x MACs, shapes
from ONNX shape inference at batch 1; other operators are not counted, so the figure is a floor).
``fixed_ms`` and ``effective_flops`` come from the repository's own reference profiles, which
cite public benchmarks of bert-base (22.4 GFLOP per 128-token sequence):

* GPU (A10G, g5.xlarge): text_embedding.gpu.yaml has batch 1 at 8.1 ms and batch 32 at 32.9 ms,
  0.8 ms per extra sequence -> 28 TFLOP/s effective; fixed 1.0 ms, the launch-and-copy overhead
  digits_classifier.gpu.yaml assumes (a small graph does not pay bert's per-layer launches).
* Inferentia2 (one NeuronCore of inf2.xlarge, 2 per instance): text_embedding.inferentia.yaml has
  batch 1 at 1.00 ms and batch 16 at 10.9 ms, 0.66 ms per extra sequence -> 34 TFLOP/s effective;
  fixed 1.00 - 0.66 = 0.34 ms.

Both rates were reached by a large transformer; a small network keeps the accelerator far less
busy, so these estimates are optimistic (lower bounds on latency), and they say so.  A model that
the accelerator's compiler cannot run is placed on the instance's host CPU: its estimate is the CPU
pool's measured table, on the assumption that the host's vCPUs run ONNX Runtime as fast as the CPU
pool's (inf2.xlarge and g5.xlarge have 4 vCPUs, as c7g.xlarge does).

An ensemble's host steps (an image classifier's resize and crop, its label lookup) run on the
instance's CPU whatever the accelerator: their compute time measured in the CPU profile is added
to the accelerator's estimate (``host_ms_by_batch``), on the same assumption about the vCPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROFILE_BATCHES = (1, 8, 32)


@dataclass(frozen=True)
class AcceleratorBasis:
    accelerator: str
    instance_type: str
    instances_per_replica: int
    fixed_ms: float
    effective_tflops: float
    basis: str


BASES: Mapping[str, AcceleratorBasis] = {
    "gpu": AcceleratorBasis("gpu", "g5.xlarge", 1, 1.0, 28.0,
                            "profiles/text_embedding.gpu.yaml (bert-base on A10G: 0.8 ms per extra 22.4-GFLOP "
                            "sequence -> 28 TFLOP/s) and the 1.0 ms fixed cost profiles/digits_classifier.gpu.yaml "
                            "assumes"),
    "inferentia": AcceleratorBasis("inferentia", "inf2.xlarge", 2, 0.34, 34.0,
                                   "profiles/text_embedding.inferentia.yaml (bert-base on inf2.xlarge: 0.66 ms per "
                                   "extra 22.4-GFLOP sequence -> 34 TFLOP/s per NeuronCore; fixed 0.34 ms)"),
}


@dataclass(frozen=True)
class FlopCount:
    flops_per_item: float
    counted_nodes: int
    uncounted_nodes: int  # compute nodes whose shapes inference could not resolve


def count_flops(model: Any, dynamic_dim: int = 8) -> FlopCount:
    """FLOPs of one item (batch 1) through the graph's Conv/ConvTranspose/Gemm/MatMul nodes."""
    import onnx
    from onnx import shape_inference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    initializers = {t.name for t in m.graph.initializer}
    for v in m.graph.input:
        if v.name in initializers or v.type.WhichOneof("value") != "tensor_type":
            continue
        for i, d in enumerate(v.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                d.dim_value = 1 if i == 0 else dynamic_dim
    try:
        m = shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # noqa: BLE001 - an uninferable graph is counted as far as it goes
        pass
    shapes: dict[str, tuple[int, ...]] = {}
    for v in (*m.graph.input, *m.graph.value_info, *m.graph.output):
        if v.type.WhichOneof("value") == "tensor_type":
            dims = v.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                shapes[v.name] = tuple(int(d.dim_value) for d in dims)
    for t in m.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    total, counted, uncounted = 0.0, 0, 0
    for n in m.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        try:
            if n.op_type in ("Conv", "ConvTranspose"):
                w, out = shapes[n.input[1]], shapes[n.output[0]]
                per_out = 1
                for k in w[1:]:
                    per_out *= k  # Cin/group x kernel
                # Conv: every output element is a dot product over Cin/group x kernel; ConvTranspose:
                # every input element is spread over Cout/group x kernel (its weight is [Cin, Cout/g, k...]).
                elements = 1
                for k in (out if n.op_type == "Conv" else shapes[n.input[0]]):
                    elements *= k
                total += 2.0 * elements * per_out
            else:
                a, b = shapes[n.input[0]], shapes[n.input[1]]
                trans_a = any(at.name == "transA" and at.i for at in n.attribute)
                trans_b = any(at.name == "transB" and at.i for at in n.attribute)
                k = a[-2] if trans_a else a[-1]
                cols = b[-2] if trans_b else b[-1]
                rows = 1
                for d in (a[:-2] + (a[-1],) if trans_a else a[:-1]):
                    rows *= d
                total += 2.0 * rows * k * cols
            counted += 1
        except (KeyError, IndexError):
            uncounted += 1
    return FlopCount(total, counted, uncounted)


def estimated_latency_ms(basis: AcceleratorBasis, flops_per_item: float, batches=PROFILE_BATCHES) -> dict[int, float]:  # type: ignore[no-untyped-def]
    per_item_ms = flops_per_item / (basis.effective_tflops * 1e12) * 1e3
    return {b: round(basis.fixed_ms + b * per_item_ms, 4) for b in batches}


def estimate_document(*, model: str, accelerator: str, max_batch_size: int, flops: FlopCount | None,
                      placement: str, cpu_latency_ms_by_batch: Mapping[int, float], cpu_p99_over_p50: float,
                      date: str, host_ms_by_batch: Mapping[int, float] | None = None) -> dict[str, Any]:
    """A profile document (``router_lib.config.load_profile`` format) labelled as an estimate."""
    basis = BASES[accelerator]
    if placement == "host_cpu":
        table = {int(b): float(v) for b, v in cpu_latency_ms_by_batch.items() if b <= max_batch_size}
        source = (f"ESTIMATE by `python -m model_repository add`, not a measurement: {model} runs on the host CPU "
                  f"of {basis.instance_type} (the {accelerator} compiler cannot run it), so the CPU pool's measured "
                  f"profile ({model}.cpu.yaml) is used")
        assumption = (f"the {basis.instance_type} host vCPUs run ONNX Runtime as fast as the CPU pool's c7g.xlarge; "
                      "replace with a measurement on the instance or the online calibration")
        instances, ratio = 1, cpu_p99_over_p50
    else:
        assert flops is not None
        batches = tuple(sorted({1, *(b for b in PROFILE_BATCHES if b <= max_batch_size), max_batch_size}))
        table = estimated_latency_ms(basis, flops.flops_per_item, batches)
        source = (f"ESTIMATE by `python -m model_repository add`, not a measurement (no {accelerator} here): "
                  f"{flops.flops_per_item / 1e6:.3g} MFLOP per item counted over {flops.counted_nodes} "
                  f"Conv/Gemm/MatMul nodes ({flops.uncounted_nodes} uncounted); basis: {basis.basis}")
        if host_ms_by_batch:
            from router_lib.domain import interpolate_latency_ms

            table = {b: round(ms + interpolate_latency_ms(host_ms_by_batch, b), 4) for b, ms in table.items()}
            source += (f"; plus the host steps' compute measured in {model}.cpu.yaml's run "
                       f"({dict(sorted(host_ms_by_batch.items()))} ms by batch), which run on the instance's CPU")
        assumption = (f"latency_ms = {basis.fixed_ms} + batch x flops / {basis.effective_tflops} TFLOP/s; rates reached "
                      "by bert-base, so optimistic for small models; replace with a measurement on the hardware or "
                      "the online calibration")
        instances, ratio = basis.instances_per_replica, 1.3
    return {
        "model": model, "accelerator": accelerator, "instance_type": basis.instance_type,
        "instances_per_replica": instances, "max_batch_size": max_batch_size,
        "latency_ms_by_batch": table, "p99_over_p50": round(max(1.0, ratio), 3),
        "provenance": {"kind": "reference", "date": date, "source": source, "assumption": assumption},
    }
