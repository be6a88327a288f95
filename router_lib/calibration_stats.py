"""Triton's statistics extension (``GET /v2/models/<model>/stats``), parsed into cumulative counters.

What the online calibration (``router_lib.calibration``) reads of it, per model:

* ``batch_stats[]``: per batch size, the executions (``compute_infer.count``) and the time they
  took, ``compute_input + compute_infer + compute_output`` ns: one execution's service time as
  the profile means it (the model instance busy with one batch), without the queue.
* ``inference_stats.success``: requests and their total time in Triton (arrival to response,
  queue included): what the edge's end-to-end time is compared with to find the fixed overhead
  outside Triton (Envoy, network, client).

Every counter is cumulative since the server started (they only grow, until a restart).  The
document is untrusted input: it is checked here once and every problem names its field.
Verified against tritonserver 2.51 (nvidia-pytriton 0.7.0): an ensemble has no ``batch_stats`` of
its own (its composing models have them), so it parses to an empty ``by_batch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class StatsParseError(ValueError):
    """A statistics document could not be read.  ``source`` names where it came from."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: cannot read Triton statistics: {detail}")


@dataclass(frozen=True)
class BatchCounters:
    """Cumulative executions of one batch size and the ns they took (input + infer + output)."""

    executions: int
    compute_ns: int


@dataclass(frozen=True)
class ModelStats:
    """One model's cumulative statistics on one replica (every version served, added up)."""

    model: str
    by_batch: Mapping[int, BatchCounters]
    requests: int = 0  # successful requests
    request_ns: int = 0  # their total time in Triton (queue + compute)

    def went_back_from(self, previous: ModelStats) -> bool:
        """True when a counter is lower than in ``previous``: the replica restarted between them."""
        if self.requests < previous.requests or self.request_ns < previous.request_ns:
            return True
        for b, before in previous.by_batch.items():
            now = self.by_batch.get(b)
            if now is None or now.executions < before.executions or now.compute_ns < before.compute_ns:
                return True
        return False


def _count_ns(node: Any, where: str, source: str) -> tuple[int, int]:
    if not isinstance(node, Mapping):
        raise StatsParseError(source, f"{where}: expected an object with count and ns, got {type(node).__name__}")
    out = []
    for key in ("count", "ns"):
        value = node.get(key, 0)
        if isinstance(value, str) and value.isdigit():  # the gRPC-JSON mapping writes uint64 as strings
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StatsParseError(source, f"{where}.{key}: expected an integer >= 0, got {value!r}")
        out.append(value)
    return out[0], out[1]


def _batch_counters(entry: Any, where: str, source: str) -> tuple[int, BatchCounters]:
    if not isinstance(entry, Mapping):
        raise StatsParseError(source, f"{where}: expected an object, got {type(entry).__name__}")
    size = entry.get("batch_size")
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise StatsParseError(source, f"{where}.batch_size: expected an integer >= 1, got {size!r}")
    executions, infer_ns = _count_ns(entry.get("compute_infer"), f"{where}.compute_infer", source)
    total_ns = infer_ns
    for part in ("compute_input", "compute_output"):
        if part in entry:
            total_ns += _count_ns(entry[part], f"{where}.{part}", source)[1]
    return size, BatchCounters(executions, total_ns)


def parse_model_stats(document: Any, source: str) -> dict[str, ModelStats]:
    """``{"model_stats": [...]}`` -> model name -> :class:`ModelStats` (versions added up).

    Raises :class:`StatsParseError` naming the field for anything that is not the extension's shape."""
    if not isinstance(document, Mapping):
        raise StatsParseError(source, f"expected a JSON object, got {type(document).__name__}")
    entries = document.get("model_stats")
    if not isinstance(entries, list):
        raise StatsParseError(source, "model_stats: expected a list")
    out: dict[str, ModelStats] = {}
    for i, entry in enumerate(entries):
        where = f"model_stats[{i}]"
        if not isinstance(entry, Mapping):
            raise StatsParseError(source, f"{where}: expected an object, got {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise StatsParseError(source, f"{where}.name: expected a model name, got {name!r}")
        inference = entry.get("inference_stats", {})
        if not isinstance(inference, Mapping):
            raise StatsParseError(source, f"{where}.inference_stats: expected an object")
        requests, request_ns = _count_ns(inference.get("success", {}), f"{where}.inference_stats.success", source)
        batches = entry.get("batch_stats", [])
        if not isinstance(batches, list):
            raise StatsParseError(source, f"{where}.batch_stats: expected a list")
        by_batch: dict[int, BatchCounters] = {}
        for j, b in enumerate(batches):
            size, counters = _batch_counters(b, f"{where}.batch_stats[{j}]", source)
            if size in by_batch:
                raise StatsParseError(source, f"{where}.batch_stats[{j}].batch_size: {size} listed twice")
            by_batch[size] = counters
        previous = out.get(name)
        if previous is not None:  # another version of the same model: add it up
            for size, c in previous.by_batch.items():
                mine = by_batch.get(size, BatchCounters(0, 0))
                by_batch[size] = BatchCounters(mine.executions + c.executions, mine.compute_ns + c.compute_ns)
            requests += previous.requests
            request_ns += previous.request_ns
        out[name] = ModelStats(name, dict(sorted(by_batch.items())), requests, request_ns)
    return out
