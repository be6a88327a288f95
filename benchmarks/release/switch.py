"""Model switching: load a new version, move 100% of a tier to it, then every tier, without a failed
request; time from each command to the moment no new request goes to the old version.

    PYTHONPATH=. .venv/bin/python -m benchmarks.release.switch [--rounds 5]

Each round: start a candidate replica of ``digits_classifier`` v2 (the "load": Triton start to
ready, warm-up included), ``POST /releases/start`` with steps ``[100]`` (bronze moves whole at
once; silver and gold follow one step later each), ``POST /releases/NAME/promote`` (every tier),
then ``abort`` (every tier back to v1) and stop the replica.  Steady load through Envoy on every
tier throughout.  A switch's time is measured on the clients' side: from the command to the send
time of the last request that still reached the old version (send time = answer time - latency).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, write_results
from benchmarks.release.harness import MODEL, digits_load, start_platform, start_release
from localnet.signals import interrupt_on_stop_signals
from model_repository.definitions import load_models
from releases.candidates import CandidateReplicas
from releases.load import TierLoad

OUT = ROOT / "benchmarks" / "results" / "release"


def last_old_send(load: TierLoad, tiers: tuple[str, ...], old: str, since_s: float) -> float:
    """Seconds from ``since_s`` to the send time of the last request (of ``tiers``) the old
    version answered; 0 if none was sent after ``since_s``."""
    sent = [a.at_s - a.latency_ms / 1000 for a in load.snapshot()
            if a.ok and a.tier in tiers and a.version == old and a.at_s - a.latency_ms / 1000 >= since_s]
    return max(sent) - since_s if sent else 0.0


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30).read()  # noqa: S310


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="switch-bench-") as tmp:
        platform = start_platform(Path(tmp) / "platform")
        load = digits_load(platform, bronze=30, silver=20, gold=10)
        candidate: CandidateReplicas | None = None
        try:
            for i in range(args.rounds):
                started = time.time()
                candidate = CandidateReplicas(load_models()[MODEL], "2", "cpu", Path(tmp) / f"v2-{i}",
                                              ROOT / "build" / "models").start()
                loaded = time.time() - started
                name = f"switch-{i}"
                cmd = time.time()
                start_release(platform, {"name": name, "model": MODEL, "stable": {"version": 1},
                                         "candidate": {"version": 2}, "steps": [100],
                                         "step": {"min_time_s": 3600, "min_requests": 1}}, candidate)
                start_acked = time.time() - cmd
                time.sleep(2.0)
                bronze = last_old_send(load, ("bronze",), "1", cmd)
                cmd2 = time.time()
                post(f"{platform.admin_url}/releases/{name}/promote")
                promote_acked = time.time() - cmd2
                time.sleep(2.0)
                every = last_old_send(load, ("bronze", "silver", "gold"), "1", cmd2)
                cmd3 = time.time()
                post(f"{platform.admin_url}/releases/{name}/abort")
                time.sleep(2.0)
                back = last_old_send(load, ("bronze", "silver", "gold"), "2", cmd3)
                candidate.stop()
                rounds.append({"round": i, "load_s": loaded, "bronze_switch_s": bronze, "all_tiers_switch_s": every,
                               "switch_back_s": back, "start_acked_s": start_acked, "promote_acked_s": promote_acked})
                print(f"[{i + 1}/{args.rounds}] load {loaded:.1f} s, start ACKed in {start_acked * 1000:.0f} ms "
                      f"(bronze -> v2: last v1 request {bronze * 1000:.0f} ms after), promote ACKed in "
                      f"{promote_acked * 1000:.0f} ms (last v1 request {every * 1000:.0f} ms after), "
                      f"back to v1 {back * 1000:.0f} ms", flush=True)
        finally:
            load.stop()
            if candidate is not None:
                candidate.stop()  # idempotent: a round that failed half-way leaves no Triton behind
            platform.stop()
    failures = load.failures()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def rng(key: str) -> str:
        values = [r[key] * 1000 for r in rounds]
        return f"{min(values):.0f}-{max(values):.0f}"
    md = f"""# Model switching: a new version loaded, then 100% of a tier moved to it

{len(rounds)} rounds; steady load through Envoy (bronze 30, silver 20, gold 10 req/s).

| | median | range |
|---|---|---|
| load: candidate Triton start -> ready and warmed up | {med('load_s'):.1f} s | {min(r['load_s'] for r in rounds):.1f}-{max(r['load_s'] for r in rounds):.1f} s |
| `releases start` (steps [100]) -> Envoy ACKed (the admin call returns) | {med('start_acked_s') * 1000:.0f} ms | {rng('start_acked_s')} ms |
| `releases start` -> no new bronze request to v1 | {med('bronze_switch_s') * 1000:.0f} ms | {rng('bronze_switch_s')} ms |
| `promote` -> Envoy ACKed | {med('promote_acked_s') * 1000:.0f} ms | {rng('promote_acked_s')} ms |
| `promote` -> no new request of any tier to v1 | {med('all_tiers_switch_s') * 1000:.0f} ms | {rng('all_tiers_switch_s')} ms |
| `abort` -> no new request to v2 | {med('switch_back_s') * 1000:.0f} ms | {rng('switch_back_s')} ms |

Client requests: {len(load.snapshot())}, failed: {len(failures)}.
"-> Envoy ACKed": the admin call's round trip, which returns once every ADS stream ACKed the new
weights (an upper bound of the switch).  "-> no new request": from the command to the send time of
the last request that still reached the old version, on the clients' clock (0: none was sent after
the command; at these rates a request leaves every 17-100 ms, so this is coarse).
"""
    write_results(OUT, "switch", {"rounds": rounds, "client_requests": len(load.snapshot()),
                                  "client_failures": len(failures)}, md)
    print(md)
    return 0 if not failures else 1


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
