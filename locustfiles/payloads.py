"""Real inputs for the two models, and the KServe v2 requests that carry them.

Inputs are real data: sentences from ``tests/data/sentences.txt`` and held-out digits from
``build/models/digits_holdout.npz`` (so a digits response can be checked against its label).
Requests are built with tritonclient's own encoders (HTTP: ``generate_request_body``, binary
tensors; gRPC: ``service_pb2`` with raw contents), the wire format Triton clients send.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "tests" / "data" / "sentences.txt"
DIGITS = ROOT / "build" / "models" / "digits_holdout.npz"

TEXT_EMBEDDING = "text_embedding"
DIGITS_CLASSIFIER = "digits_classifier"
OUTPUTS = {TEXT_EMBEDDING: ("EMBEDDING",), DIGITS_CLASSIFIER: ("label", "probabilities")}


@dataclass(frozen=True)
class Batch:
    """One request's inputs: name -> array (first dimension = batch), and the expected labels."""

    model: str
    inputs: dict[str, np.ndarray]
    expected_labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    return tuple(s for s in SENTENCES.read_text().splitlines() if s.strip())


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DIGITS)
    return data["x"].astype(np.float32), data["y"].astype(np.int64)


def make_batch(model: str, size: int, rng: random.Random) -> Batch:
    if model == TEXT_EMBEDDING:
        texts = [rng.choice(sentences()).encode() for _ in range(size)]
        return Batch(model, {"TEXT": np.array(texts, dtype=np.object_).reshape(size, 1)})
    if model == DIGITS_CLASSIFIER:
        x, y = digits()
        idx = [rng.randrange(len(y)) for _ in range(size)]
        return Batch(model, {"float_input": x[idx]}, y[idx])
    raise ValueError(f"unknown model {model!r}; known: {TEXT_EMBEDDING}, {DIGITS_CLASSIFIER}")


def datatype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return "BYTES" if array.dtype == np.object_ else str(np_to_triton_dtype(array.dtype))


def http_body(batch: Batch) -> tuple[bytes, int]:
    """(body, json header length) for ``POST /v2/models/<model>/infer`` with binary tensors."""
    import tritonclient.http as httpclient

    inputs = []
    for name, array in batch.inputs.items():
        inp = httpclient.InferInput(name, list(array.shape), datatype(array))
        inp.set_data_from_numpy(array, binary_data=True)
        inputs.append(inp)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTPUTS[batch.model]]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, (json_size or 0)


def grpc_request(batch: Batch):  # -> service_pb2.ModelInferRequest
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    req = service_pb2.ModelInferRequest(model_name=batch.model)
    for name, array in batch.inputs.items():
        req.inputs.add(name=name, datatype=datatype(array), shape=list(array.shape))
        raw = serialize_byte_tensor(array).item() if array.dtype == np.object_ else array.tobytes()
        req.raw_input_contents.append(raw)
    for n in OUTPUTS[batch.model]:
        req.outputs.add(name=n)
    return req


def check_outputs(batch: Batch, outputs: dict[str, np.ndarray]) -> str:
    """'' when the response has the promised shapes; else why not."""
    n = batch.size
    if batch.model == TEXT_EMBEDDING:
        emb = outputs.get("EMBEDDING")
        if emb is None or emb.shape != (n, 384):
            return f"EMBEDDING shape {None if emb is None else emb.shape}, expected ({n}, 384)"
        return ""
    label, probs = outputs.get("label"), outputs.get("probabilities")
    if label is None or probs is None or label.reshape(-1).shape != (n,) or probs.shape != (n, 10):
        return "digits outputs missing or of the wrong shape"
    return ""
