"""The generic accuracy gate: any compiled variant against ONNX Runtime fp32, output by output.

A model onboarded without a hand-written reference (``profiler.accuracy`` keeps those of the two
built-in models, whose references are better than fp32: sentence-transformers' embeddings, the
digits' true labels) is judged by what the user can always supply: sample inputs (their own
``.npz``, or seeded ones generated from the input spec) and the fp32 ONNX they onboarded.  The
reference is that ONNX run by ONNX Runtime's CPU provider; each output of the variant must stay
within its tolerance (``OutputTolerance``):

* float outputs: every element within ``atol + rtol * |reference|`` (numpy.allclose).  Defaults
  ``atol 1e-4, rtol 1e-3``: graph rewrites and fusions move float32 results by ~1e-6, so they pass
  with a wide margin, and a variant that changes answers does not.  int8 variants usually need a
  looser tolerance, given per output (``--tolerance probabilities=atol:0.05``).  For 2-D float
  outputs the share of rows with the same argmax is reported beside it (what a classifier's user
  would notice).
* integer and bool outputs (labels, masks): the share of rows exactly equal to the reference must
  be at least ``min_agreement`` (default 1.0).

``batch_dependence`` checks the other assumption serving makes: an item's answer must not depend on
which other items share its batch (Triton batches requests from different clients together).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model_repository.definitions import ModelDefinition, TensorSpec
from model_repository.user_models import OutputTolerance
from profiler.accuracy import AccuracyCheck, AccuracyVerdict

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32,
               "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8}
GENERATED_DYNAMIC_DIM = 8  # a -1 dimension of generated samples
GENERATED_COUNT = 32
GENERATED_INT_HIGH = 10  # generated integers lie in [0, 10): small enough to be valid indices/ids


def generate_samples(inputs: Sequence[TensorSpec], count: int = GENERATED_COUNT, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the declared types and shapes: floats standard normal, integers in
    [0, GENERATED_INT_HIGH), uint8 over its range, bools fair coins."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in inputs:
        shape = (count, *(GENERATED_DYNAMIC_DIM if d == -1 else d for d in t.dims))
        dtype = NUMPY_TYPES[t.data_type]
        if t.data_type in ("TYPE_FP32", "TYPE_FP16"):
            out[t.name] = rng.standard_normal(shape).astype(dtype)
        elif t.data_type == "TYPE_UINT8":
            out[t.name] = rng.integers(0, 256, shape).astype(dtype)
        elif t.data_type == "TYPE_BOOL":
            out[t.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[t.name] = rng.integers(0, GENERATED_INT_HIGH, shape).astype(dtype)
    return out


def read_samples(path: Path, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The ``.npz`` of sample inputs, checked against the input spec: one array per input (named as
    the input), of its kind of type (cast to the exact type), matching its fixed dimensions after
    the batch axis, all with the same number of rows.  ``ValueError`` names what is wrong."""
    where = f"--inputs {path}"
    if not path.is_file():
        raise ValueError(f"{where}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: not a readable .npz of arrays ({e})") from None
    wanted = {t.name for t in inputs}
    missing, extra = sorted(wanted - set(arrays)), sorted(set(arrays) - wanted)
    if missing or extra:
        raise ValueError(f"{where}: arrays must be named as the model's inputs {sorted(wanted)}; "
                         + "; ".join(x for x in (f"missing {missing}" if missing else "",
                                                  f"unexpected {extra}" if extra else "") if x))
    out, rows = {}, set()
    for t in inputs:
        a = arrays[t.name]
        dtype = np.dtype(NUMPY_TYPES[t.data_type])
        if a.dtype.kind != dtype.kind and not (a.dtype.kind in "iu" and dtype.kind in "iu"):
            raise ValueError(f"{where}: array {t.name!r} has dtype {a.dtype}, the input is {t.data_type} ({dtype})")
        if a.ndim != len(t.dims) + 1:
            raise ValueError(f"{where}: array {t.name!r} has shape {list(a.shape)}; the input is "
                             f"[batch, {', '.join(str(d) for d in t.dims)}] ({len(t.dims) + 1} dimensions)")
        for axis, d in enumerate(t.dims, start=1):
            if d != -1 and a.shape[axis] != d:
                raise ValueError(f"{where}: array {t.name!r} has shape {list(a.shape)}; dimension {axis} must be {d}")
        if a.shape[0] < 1:
            raise ValueError(f"{where}: array {t.name!r} has no rows")
        rows.add(a.shape[0])
        out[t.name] = a.astype(dtype, copy=False)
    if len(rows) > 1:
        raise ValueError(f"{where}: arrays have different numbers of rows {sorted(rows)}; one row per sample")
    return out


def run_onnx(path: Path, samples: Mapping[str, np.ndarray], output_names: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
    """``output_names`` of ``path`` (ONNX Runtime, CPU) over ``samples``, ``batch_size`` rows per call."""
    from model_repository.ort_runner import make_session

    sess = make_session(str(path), 1)
    n = len(next(iter(samples.values())))
    parts: dict[str, list[np.ndarray]] = {o: [] for o in output_names}
    for start in range(0, n, batch_size):
        outs = sess.run(list(output_names), {k: v[start:start + batch_size] for k, v in samples.items()})
        for name, o in zip(output_names, outs, strict=True):
            parts[name].append(o)
    return {name: np.concatenate(p, axis=0) for name, p in parts.items()}


def compare_outputs(got: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    tolerances: Mapping[str, OutputTolerance]) -> AccuracyVerdict:
    """Every output of ``got`` against ``reference`` within its tolerance (default ``OutputTolerance()``)."""
    metrics: dict[str, float] = {}
    failures: list[str] = []
    passes: list[str] = []
    for name, ref in reference.items():
        tol = tolerances.get(name, OutputTolerance())
        out = got.get(name)
        if out is None or out.shape != ref.shape:
            failures.append(f"{name}: shape {None if out is None else list(out.shape)} != reference {list(ref.shape)}")
            continue
        if ref.dtype.kind == "f":
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            bound = tol.atol + tol.rtol * np.abs(ref.astype(np.float64))
            worst = float(diff.max()) if diff.size else 0.0
            outside = int((diff > bound).sum())
            metrics[f"{name}.max_abs_diff"] = worst
            metrics[f"{name}.elements_outside"] = float(outside)
            if ref.ndim == 2 and ref.shape[1] > 1:
                metrics[f"{name}.argmax_agreement"] = float((out.argmax(axis=1) == ref.argmax(axis=1)).mean())
            said = f"{name}: max abs diff {worst:.3g} (atol {tol.atol:g}, rtol {tol.rtol:g})"
            (failures if outside else passes).append(said + (f", {outside} of {diff.size} elements outside" if outside else ""))
        else:
            rows_equal = (out.reshape(len(out), -1) == ref.reshape(len(ref), -1)).all(axis=1)
            agreement = float(rows_equal.mean()) if len(rows_equal) else 1.0
            metrics[f"{name}.agreement"] = agreement
            said = f"{name}: {agreement:.4f} of rows equal (need {tol.min_agreement:g})"
            (failures if agreement < tol.min_agreement else passes).append(said)
    if failures:
        return AccuracyVerdict(False, "outputs differ from ONNX Runtime fp32: " + "; ".join(failures), metrics)
    return AccuracyVerdict(True, "matches ONNX Runtime fp32: " + "; ".join(passes), metrics)


def generic_check(samples: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                  tolerances: Mapping[str, OutputTolerance], batch_size: int) -> AccuracyCheck:
    """An ``AccuracyCheck`` (``profiler.compile`` runs every variant through it) against ``reference``:
    the fp32 model's outputs on ``samples``."""

    def check(path: Path) -> AccuracyVerdict:
        return compare_outputs(run_onnx(path, samples, list(reference), batch_size), reference, tolerances)

    return check


def batch_dependence(path: Path, samples: Mapping[str, np.ndarray], output_names: Sequence[str],
                     batch_size: int, tolerances: Mapping[str, OutputTolerance], rows: int = 4) -> str | None:
    """None when the first ``rows`` samples get the same answer alone as in a batch of ``batch_size``;
    otherwise why not (e.g. batch statistics left in the graph: BatchNorm in training mode)."""
    n = min(rows, len(next(iter(samples.values()))))
    batched = run_onnx(path, samples, output_names, batch_size)
    alone = run_onnx(path, {k: v[:n] for k, v in samples.items()}, output_names, 1)
    verdict = compare_outputs(alone, {k: v[:n] for k, v in batched.items()}, tolerances)
    if verdict.passed:
        return None
    return ("an item's outputs depend on the other items in its batch (alone vs batched: "
            f"{verdict.message.split(': ', 1)[1]}); Triton batches different clients' requests together, so "
            "the model must treat rows independently (export in eval mode: model.eval())")


def check_for_model(model: ModelDefinition, artifacts: Path,
                    tolerances: Mapping[str, OutputTolerance] | None = None) -> AccuracyCheck:
    """The generic gate for ``model``: its onboarded samples (``<artifacts>/<name>.samples.npz``) or
    generated ones, against its fp32 artifact, with its onboarded tolerances.  An ensemble's samples
    are its public inputs: its image preprocessing step turns them into the graph's input first."""
    samples_file = artifacts / f"{model.name}.samples.npz"
    samples = read_samples(samples_file, model.inputs) if samples_file.exists() else generate_samples(model.inputs)
    if model.preprocess is not None and model.preprocess.kind == "image_preprocess":
        from model_repository.image_steps import ImagePreprocess, preprocess

        spec = ImagePreprocess.from_parameters(dict(model.preprocess.parameters))
        samples = {model.accelerated.inputs[0].name: preprocess(samples[model.preprocess.inputs[0].name], spec)}
    if tolerances is None:
        tolerances = {}
        if model.origin != "built-in":
            from model_repository.user_models import read_description

            tolerances = read_description(Path(model.origin), expected_name=model.name)[1]
    names = [t.name for t in model.accelerated.outputs]
    batch = min(model.max_batch_size, 64)
    reference = run_onnx(artifacts / model.accelerated.artifact, samples, names, batch)
    return generic_check(samples, reference, tolerances, batch)
