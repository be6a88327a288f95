"""A lean closed-loop KServe v2 gRPC load generator: the request is serialised once, then sent as raw
bytes over persistent (keep-alive) HTTP/2 connections.

Why not ``tritonclient.grpc``: its ``infer`` rebuilds and serialises the protobuf request and parses the
answer into numpy in Python on every call.  On this 2-core machine the client shares the CPUs with
Triton and Envoy, so a heavy client both slows every path and hides the proxy's share of the CPU.
Here each call is grpcio's C core plus one Python function call (no protobuf work per request); the
client's own CPU time per request is measured and reported beside the results.  It is still a Python
client: no C-speed KServe load generator installs from PyPI here (``perf-analyzer`` has no wheel for
this Python, FINDINGS), so its cost is stated, not hidden.

Each connection is its own channel with a local subchannel pool: grpcio otherwise shares one TCP
connection among channels to the same target, and Envoy would then see one downstream connection
(one worker thread) however many clients run.
"""

from __future__ import annotations

import resource
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def model_infer_request(model: str, text: str = "The quick brown fox jumps over the lazy dog.") -> bytes:
    """The serialised ModelInferRequest of one batch-1 request to ``model`` (the two sample models)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    if model == "digits_classifier":
        tensor.name, tensor.datatype = "float_input", "FP32"
        tensor.shape.extend([1, 64])
        request.raw_input_contents.append(np.linspace(0, 16, 64, dtype=np.float32).tobytes())
    elif model == "text_embedding":
        tensor.name, tensor.datatype = "TEXT", "BYTES"
        tensor.shape.extend([1, 1])
        raw = text.encode()
        request.raw_input_contents.append(struct.pack("<I", len(raw)) + raw)
    else:
        raise ValueError(f"no sample request for model {model!r} (digits_classifier or text_embedding)")
    return request.SerializeToString()


@dataclass
class PhaseResult:
    latencies_s: list[float]
    errors: int
    seconds: float
    client_cpu_s: float
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def req_per_s(self) -> float:
        return len(self.latencies_s) / self.seconds


def _channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                  ("grpc.max_receive_message_length", 64 * 1024 * 1024)])


class ClosedLoop:
    """``connections`` persistent connections to ``target``, one thread each, one request in flight
    per connection.  Open once (connections stay up between phases), ``run`` phases, ``close``."""

    def __init__(self, target: str, payload: bytes, metadata: Sequence[tuple[str, str]] = (),
                 connections: int = 4, timeout_s: float = 10.0) -> None:
        self.target, self.payload, self.metadata = target, payload, tuple(metadata)
        self.timeout_s = timeout_s
        self.channels = [_channel(target) for _ in range(connections)]
        self.calls = [c.unary_unary(MODEL_INFER) for c in self.channels]  # bytes in, bytes out

    def check(self) -> bytes:
        """One request; raises grpc.RpcError if the path does not serve it."""
        return self.calls[0](self.payload, metadata=self.metadata, timeout=self.timeout_s)

    def run(self, seconds: float) -> PhaseResult:
        stop_at = time.perf_counter() + seconds
        per_thread: list[list[float]] = [[] for _ in self.calls]
        errors = [0] * len(self.calls)
        first_error: list[str] = []
        payload, metadata, timeout = self.payload, self.metadata, self.timeout_s

        def loop(i: int) -> None:
            call, mine, clock = self.calls[i], per_thread[i], time.perf_counter
            while True:
                started = clock()
                if started >= stop_at:
                    return
                try:
                    call(payload, metadata=metadata, timeout=timeout)
                except grpc.RpcError as e:  # counted and reported; a benchmark must not stop on one error
                    errors[i] += 1
                    if not first_error:
                        first_error.append(f"{e.code()}: {e.details()}")  # type: ignore[attr-defined]
                    continue
                mine.append(clock() - started)

        cpu_before = _process_cpu_s()
        began = time.perf_counter()
        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(self.calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        latencies = [v for mine in per_thread for v in mine]
        return PhaseResult(latencies, sum(errors), elapsed, _process_cpu_s() - cpu_before,
                           first_error[0] if first_error else "")

    def close(self) -> None:
        for c in self.channels:
            c.close()


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
