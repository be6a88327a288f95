"""End to end, real Envoy and real Triton: a hung replica (SIGSTOP: its port still accepts
connections, it never answers) costs a gold request one per-try timeout, never a failure, and
Envoy's outlier detection ejects it (per-try timeouts count as local-origin failures)."""

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


def test_a_sigstopped_replica_is_ejected_within_the_per_try_timeout_with_no_failed_gold_request(bed):
    bed.publish({"gold": "pair", "silver": "pair", "bronze": "pair"})
    per_try_ms = bed.settings.retry.per_try_timeout_ms("gold")
    assert per_try_ms is not None
    rate = 0.6 * capacity_per_s(bed, "pair")  # of one replica: the survivor carries it alone
    open_loop(bed.url, {"gold": rate}, 1.0, seed=103)  # both replicas warm, connections open
    hung = bed.supervisor.replicas("pair")[1]
    assert hung.pid is not None and not _ejected(bed, hung.http_port)
    stopped_at: list[float] = []
    ejected_at: list[float] = []

    def hang_then_watch() -> None:
        time.sleep(1.5)
        os.kill(hung.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        stopped_at.append(time.monotonic())
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if _ejected(bed, hung.http_port):
                ejected_at.append(time.monotonic())
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=hang_then_watch)
    watcher.start()
    try:
        outcomes = open_loop(bed.url, {"gold": rate}, 5.0, seed=3)
    finally:
        watcher.join()
        os.kill(hung.pid, signal.SIGCONT)  # type: ignore[arg-type]
    gold = summarize(outcomes)["gold"]
    assert stopped_at, "the replica was not stopped"
    assert gold.sent >= 20 and gold.failed == 0 and gold.ok == gold.sent, gold.as_dict()
    assert ejected_at, f"the hung replica was not ejected within 5 s; {gold.as_dict()}"
    ejection_ms = (ejected_at[0] - stopped_at[0]) * 1000
    # The first try sent to it after the SIGSTOP times out after per_try_ms; the outlier detector
    # needs two in a row, the next one sent within a few inter-arrival times (rate/2 per replica).
    inter_arrival_ms = 2 * 1000 / rate
    assert ejection_ms <= per_try_ms + 4 * inter_arrival_ms + 100, (ejection_ms, per_try_ms, gold.as_dict())
    print(f"hung replica ejected {ejection_ms:.0f} ms after SIGSTOP (per-try timeout {per_try_ms:.0f} ms, "
          f"dilated x{bed.fleet.time_dilation:g}); gold {gold.as_dict()}")
