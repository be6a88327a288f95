"""End to end on a real Triton replica (the test bed's shared pool: digits_classifier, emulated,
priority levels): the waker starts with the replica, wakes the model at its own level, and its
requests are rejected in the queue -- never executed, not counted as failed requests, and no
obstacle to draining the replica."""

from __future__ import annotations

import pytest

from benchmarks.resilience.harness import MODEL
from fleet.supervisor import wait_quiesced, wait_until
from router_lib.metrics_text import parse_triton

pytestmark = pytest.mark.integration


def _counter(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_the_waker_wakes_the_shared_model_and_its_requests_never_run(bed):
    (process,) = bed.supervisor.processes("shared")
    waker = process.waker
    assert waker is not None and waker.running
    assert [(t.model, t.level) for t in waker.targets] == [(MODEL, 4)]  # the tiers' 3 levels, then its own
    (fifo,) = bed.supervisor.processes("fifo")
    assert fifo.waker is None  # nothing there declares a wake-up level

    before = process.metrics_text()
    sent = waker.sent
    wait_until(lambda: waker.sent >= sent + 25, 10.0, "25 more wake-up requests")
    # Triton refreshes its metrics every second (--metrics-interval-ms=1000): wait for the counter to move.
    rejected = f'nv_inference_request_failure{{model="{MODEL}",reason="REJECTED"'
    rejected_before = _counter(before, rejected)
    wait_until(lambda: _counter(process.metrics_text(), rejected) > rejected_before + 10, 5.0,
               "Triton counting the wake-ups as rejected")
    after = process.metrics_text()
    assert waker.executed == 0 and waker.failed == 0 and waker.rejected >= 25
    assert _counter(after, "emulation_executions_total{") == _counter(before, "emulation_executions_total{")
    assert _counter(after, f'nv_inference_request_success{{model="{MODEL}"') == \
        _counter(before, f'nv_inference_request_success{{model="{MODEL}"')
    # what the control plane reads: no failed request, although Triton counted rejections
    counters = parse_triton(after, "shared-0").counters
    assert counters.get((MODEL, "nv_inference_request_failure"), 0.0) == \
        parse_triton(before, "shared-0").counters.get((MODEL, "nv_inference_request_failure"), 0.0)
    # and a drained replica that is only being woken is quiet
    assert wait_quiesced(process, timeout_s=10.0)


def test_a_replica_added_by_scaling_wakes_its_batcher_too(bed):
    """Scaled-up replicas become ready through the supervisor's watcher, not ``wait_ready``."""
    (first,) = bed.supervisor.processes("shared")
    bed.supervisor.scale("shared", 2)
    try:
        (added,) = [p for p in bed.supervisor.processes("shared") if p is not first]
        wait_until(lambda: added.waker is not None and added.waker.running and added.waker.rejected > 0, 90.0,
                   "the added replica ready and its waker's requests rejected")
        assert [(t.model, t.level) for t in added.waker.targets] == [(MODEL, 4)]
    finally:
        bed.supervisor.scale("shared", 1)
    assert bed.supervisor.processes("shared") == [first] and added.waker is None  # stopped with its replica
