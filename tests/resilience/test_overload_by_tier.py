"""End to end, real Envoy and real Triton: overload by tier on a pool the tiers share.

Open-loop Poisson load (the load does not slow down when the server does) of the digits classifier
through Envoy's REST listener, with the tier header.  The pool is an emulated accelerator
(synthetic outputs) in time dilated x20 (``tests/resilience/conftest.py``), so "within bound"
means within the dilated bound (gold 1 s), service times dilated alike.  The SLA is a p99: it is
asserted on the p99 (a few dozen gold requests per run, so at most one may land past the bound).
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.resilience.harness import (
    MODEL,
    bound_ms,
    capacity_per_s,
    digits_body,
    open_loop,
    summarize,
    within_bound,
)

pytestmark = pytest.mark.integration
WARMUP_S = 1.0


def _run(bed, pool, rates, duration_s, seed):  # type: ignore[no-untyped-def]
    bed.publish({tier: pool for tier in ("gold", "silver", "bronze")})
    open_loop(bed.url, {"gold": 5.0}, 0.5, seed=seed + 100)  # connections and the stub warm
    outcomes = open_loop(bed.url, rates, duration_s, seed=seed)
    return outcomes, summarize(outcomes, warmup_s=WARMUP_S)


def test_3x_overload_keeps_gold_within_bound_and_sheds_bronze_first(bed):
    capacity = capacity_per_s(bed, "shared")
    # 3x the pool's capacity: gold alone fits (0.45x), gold + silver does not (1.5x).
    rates = {"gold": 0.45 * capacity, "silver": 1.05 * capacity, "bronze": 1.5 * capacity}
    outcomes, tiers = _run(bed, "shared", rates, 8.0, seed=1)
    gold, silver, bronze = tiers["gold"], tiers["silver"], tiers["bronze"]
    detail = {t: s.as_dict() for t, s in tiers.items()}
    assert gold.sent >= 20, detail
    assert gold.failed == 0 and gold.shed == 0, detail
    assert gold.p99_ms is not None and gold.p99_ms <= bound_ms(bed, "gold"), detail
    # Bronze first: nearly all of it, and a larger share of it than of silver.
    assert bronze.shed_fraction >= 0.8, detail
    assert bronze.shed_fraction > silver.shed_fraction, detail
    assert silver.failed == 0 and bronze.failed == 0, detail
    # Every shed request was told when to come back.
    assert silver.shed_with_retry_after == silver.shed and bronze.shed_with_retry_after == bronze.shed, detail
    # The pool stayed busy: shedding did not throw away capacity.
    served_per_s = sum(s.ok for s in tiers.values()) / (8.0 - WARMUP_S)
    assert served_per_s >= 0.6 * capacity, (served_per_s, capacity, detail)
    assert within_bound(gold, outcomes, bound_ms(bed, "gold"), WARMUP_S) >= 0.95, detail


def test_priority_keeps_gold_within_bound_under_a_silver_load_that_breaches_it_on_one_queue(bed):
    """Issue 12: the same pool, the same load (gold 0.3x + silver 1.2x its capacity), once with
    one FIFO queue and once with the tiers' priority levels."""
    capacity = capacity_per_s(bed, "shared")
    rates = {"gold": 0.3 * capacity, "silver": 1.2 * capacity}
    gold_bound = bound_ms(bed, "gold")
    fifo_outcomes, fifo = _run(bed, "fifo", rates, 7.0, seed=2)
    shared_outcomes, shared = _run(bed, "shared", rates, 7.0, seed=2)
    detail = {"fifo": {t: s.as_dict() for t, s in fifo.items()}, "shared": {t: s.as_dict() for t, s in shared.items()}}
    assert within_bound(fifo["gold"], fifo_outcomes, gold_bound, WARMUP_S) < 0.5, detail  # one queue: breached
    assert shared["gold"].failed == 0 and shared["gold"].shed == 0, detail
    assert shared["gold"].p99_ms is not None and shared["gold"].p99_ms <= gold_bound, detail
    assert within_bound(shared["gold"], shared_outcomes, gold_bound, WARMUP_S) >= 0.95, detail
    assert shared["silver"].ok > 0, detail  # silver rides the shared pool, behind gold


def test_a_grpc_burst_sheds_bronze_as_resource_exhausted_with_a_pushback_and_serves_gold(bed):
    """Real Triton's gRPC shed (UNAVAILABLE "Exceeds maximum queue size") through the edge."""
    bed.publish({tier: "shared" for tier in ("gold", "silver", "bronze")})
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="float_input", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros(64, np.float32).tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{bed.settings.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def one(tier: str) -> tuple[str, grpc.StatusCode, str | None]:
            try:
                stub.ModelInfer(request, metadata=[("x-sla-tier", tier)], timeout=60)
                return tier, grpc.StatusCode.OK, None
            except grpc.RpcError as error:
                return tier, error.code(), dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms")

        with ThreadPoolExecutor(48) as pool:
            results = list(pool.map(one, ["bronze"] * 40 + ["gold"] * 8))
    codes = Counter((tier, code) for tier, code, _ in results)
    assert codes[("gold", grpc.StatusCode.OK)] == 8, codes
    assert codes[("bronze", grpc.StatusCode.RESOURCE_EXHAUSTED)] >= 10, codes
    assert set(codes) <= {("gold", grpc.StatusCode.OK), ("bronze", grpc.StatusCode.OK),
                          ("bronze", grpc.StatusCode.RESOURCE_EXHAUSTED)}, codes
    assert all(pushback == "1000" for _, code, pushback in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_a_bronze_client_that_writes_its_own_gold_priority_is_still_shed_as_bronze(bed):
    """Real Triton takes the first of duplicate JSON keys: the edge's priority must be that one."""
    bed.publish({tier: "shared" for tier in ("gold", "silver", "bronze")})
    body = json.dumps({**digits_body(), "parameters": {"priority": 1}})

    def one(_: int) -> int:
        return requests.post(bed.url, data=body, headers={"x-sla-tier": "bronze", "content-type": "application/json"},
                             timeout=60).status_code

    with ThreadPoolExecutor(40) as pool:
        codes = Counter(pool.map(one, range(40)))
    assert codes[429] >= 10 and set(codes) <= {200, 429}, codes  # at gold's level none would be shed
