"""Real request payloads for each sample model: the sentences the embedding reference was built
from, the digits the classifier was held back on.  Another model gets seeded random data of the
declared type and shape, and says so in ``describe``.

A multi-sentence request is built from sentences of one tokenizer length bucket.  Triton's dynamic
batcher only merges requests of equal shape, so that is what a server-formed batch of single-
sentence requests looks like; a client batch mixing lengths would pad every sentence to the longest
(here one 45-token sentence would pad batches of 16+ to 64 tokens, 4x the common 16) and profile a
batch the pool never runs.  Request k takes the bucket of sentence ``k * batch_size`` (mod the
sentence count), so buckets appear roughly in proportion to their share of the sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from model_repository.build import load_sentences
from model_repository.definitions import ModelDefinition, TensorSpec

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32,
               "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8}
RANDOM_DIM = 16  # a -1 dimension of a model without sample data


def sentences_by_bucket(model: ModelDefinition, artifacts: Path, batch_size: int, count: int) -> list[list[str]]:
    """``count`` requests of ``batch_size`` sentences, each request from one length bucket."""
    sentences = load_sentences()
    if batch_size == 1 or model.tokenizer is None:
        return [[sentences[(k * batch_size + j) % len(sentences)] for j in range(batch_size)] for k in range(count)]
    from model_repository.text_tokenizer import BucketTokenizer

    tok = BucketTokenizer(artifacts / "tokenizer.json", model.tokenizer.pad_buckets)
    bucket_of = [tok.bucket_for(len(e.ids)) for e in tok.tokenizer.encode_batch(sentences)]
    groups: dict[int, list[str]] = {}
    for s, b in zip(sentences, bucket_of, strict=True):
        groups.setdefault(b, []).append(s)
    out = []
    for k in range(count):
        group = groups[bucket_of[(k * batch_size) % len(sentences)]]  # bucket frequency = sentence share
        out.append([group[(k * batch_size + j) % len(group)] for j in range(batch_size)])
    return out


def _rows(model: ModelDefinition, spec: TensorSpec, artifacts: Path, n: int, batch_size: int = 1) -> np.ndarray:
    if spec.data_type == "TYPE_STRING":
        requests = sentences_by_bucket(model, artifacts, batch_size, n // batch_size)
        return np.array([[s.encode()] for r in requests for s in r], dtype=object)
    holdout = artifacts / "digits_holdout.npz"
    if model.name == "digits_classifier" and holdout.exists():
        x = np.load(holdout)["x"].astype(np.float32)
        return x[np.arange(n) % len(x)]
    samples = artifacts / f"{model.name}.samples.npz"  # an onboarded model's sample inputs
    if samples.exists():
        x = np.load(samples)[spec.name].astype(NUMPY_TYPES[spec.data_type])
        return x[np.arange(n) % len(x)]
    dims = tuple(RANDOM_DIM if d == -1 else d for d in spec.dims)
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, *dims)).astype(NUMPY_TYPES[spec.data_type])


def describe(model: ModelDefinition) -> str:
    if any(t.data_type == "TYPE_STRING" for t in model.inputs):
        return "sentences from tests/data/sentences.txt (a multi-sentence request: one length bucket)"
    if model.name == "digits_classifier":
        return "held-back digits (digits_holdout.npz)"
    if model.origin != "built-in":
        return f"the onboarded sample inputs ({model.name}.samples.npz)"
    return "seeded random tensors of the declared shape"


def request_sets(model: ModelDefinition, artifacts: Path, batch_size: int, count: int = 16) -> list[list[grpcclient.InferInput]]:
    """``count`` distinct requests of ``batch_size`` items, rotated through by the load generator."""
    if not 1 <= batch_size <= model.max_batch_size:
        raise ValueError(f"batch size {batch_size} outside 1..{model.max_batch_size} for {model.name}")
    rows = {t.name: _rows(model, t, artifacts, batch_size * count, batch_size) for t in model.inputs}
    sets = []
    for k in range(count):
        inputs = []
        for t in model.inputs:
            data = rows[t.name][k * batch_size:(k + 1) * batch_size]
            inp = grpcclient.InferInput(t.name, list(data.shape), "BYTES" if t.data_type == "TYPE_STRING"
                                        else t.data_type.removeprefix("TYPE_"))
            inp.set_data_from_numpy(data)
            inputs.append(inp)
        sets.append(inputs)
    return sets


def output_names(model: ModelDefinition) -> Sequence[str]:
    return [t.name for t in model.outputs]
