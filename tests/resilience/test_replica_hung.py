"""End to end, real Envoy and real Triton: a hung replica (SIGSTOP: its port still accepts
connections, it never answers) costs a gold request one per-try timeout, never a failure, and
Envoy's outlier detection ejects it (per-try timeouts count as local-origin failures).  Named to run
after the overload checks, which share the test bed: it leaves behind a replica it stopped."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from benchmarks.resilience.harness import MODEL, capacity_per_s, open_loop, summarize
from xds_server.naming import cluster_name

pytestmark = pytest.mark.integration


def _ejected(bed, port: int) -> bool:  # type: ignore[no-untyped-def]
    prefix = f"{cluster_name(MODEL, 'pair', 'http')}::127.0.0.1:{port}::health_flags::"
    return any(line.startswith(prefix) and "failed_outlier_check" in line
               for line in bed.envoy.admin_get("/clusters").splitlines())


def test_a_sigstopped_replica_costs_a_request_one_per_try_timeout_is_ejected_and_no_gold_request_fails(bed):
    bed.publish({"gold": "pair", "silver": "pair", "bronze": "pair"})
    per_try_ms = bed.settings.retry.per_try_timeout_ms("gold")
    assert per_try_ms is not None
    rate = 0.6 * capacity_per_s(bed, "pair")  # of one replica: the survivor carries it alone
    open_loop(bed.url, {"gold": rate}, 1.0, seed=103)  # both replicas warm, connections open
    hung = bed.supervisor.replicas("pair")[1]
    assert hung.pid is not None and not _ejected(bed, hung.http_port)
    load_s = 5.0
    stopped_at: list[float] = []
    ejected_at: list[float] = []

    def hang_then_watch() -> None:
        time.sleep(1.5)
        os.kill(hung.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        stopped_at.append(time.monotonic())
        deadline = time.monotonic() + 3.0 * load_s
        while time.monotonic() < deadline:
            if _ejected(bed, hung.http_port):
                ejected_at.append(time.monotonic())
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=hang_then_watch)
    watcher.start()
    try:
        outcomes = open_loop(bed.url, {"gold": rate}, load_s, seed=3)
    finally:
        watcher.join()
        os.kill(hung.pid, signal.SIGCONT)  # type: ignore[arg-type]
    gold = summarize(outcomes)["gold"]
    assert stopped_at, "the replica was not stopped"
    assert gold.sent >= 20 and gold.failed == 0 and gold.ok == gold.sent, gold.as_dict()
    assert ejected_at, f"the hung replica was not ejected; {gold.as_dict()}"
    ejection_ms = (ejected_at[0] - stopped_at[0]) * 1000
    # What the hung replica may cost a request: one try that runs into the per-try timeout, then a
    # normal try elsewhere (within gold's bound).  Without a per-try timeout the request would be
    # held until the route timeout (60 s): benchmarks/results/resilience.
    bound = bed.fleet.tiers.get("gold").p99_ms
    slowest = max(o.latency_ms for o in outcomes)
    assert slowest <= per_try_ms + bound, (slowest, per_try_ms, bound, gold.as_dict())
    # Ejected by timeouts alone (no connection ever fails): two consecutive per-try timeouts.  The
    # time is as this busy machine's poller saw it; a generous ceiling, the measured figure printed.
    assert ejection_ms <= 4 * per_try_ms, (ejection_ms, per_try_ms, gold.as_dict())
    print(f"hung replica ejected {ejection_ms:.0f} ms after SIGSTOP (per-try timeout {per_try_ms:.0f} ms, "
          f"dilated x{bed.fleet.time_dilation:g}); gold {gold.as_dict()}")
