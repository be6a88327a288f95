"""Diagnostic: how much of Envoy's added latency at one request in flight is this virtual machine
waking an idle CPU (issue 16, item 7).

On a KVM guest with the ``haltpoll`` cpuidle driver, ``guest_halt_poll_ns`` says how long an idle
CPU polls before it halts; at 0 it halts at once and the next wake-up goes through the hypervisor.
A request through Envoy wakes more idle CPUs than a direct one (Envoy's core when Triton answers,
the client's when Envoy forwards), and between text-embedding requests every core idles for
milliseconds.  This runs ``benchmarks.xds.envoy_overhead`` (Envoy on its own core, the shipped
chain) alternately at the machine's setting and at ``--poll-ns``, ``--rounds`` times, and puts the
figures side by side.  It changes a machine-wide kernel setting for the runs at ``--poll-ns`` and
restores the value it found, whatever happens (root only).  Not part of ``make benchmark``: it is
not the platform as it runs, and other work on the machine sees the setting while it is changed.

    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.halt_poll_diagnostic --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.common import HALT_POLL, cpu_idle_settings
from benchmarks.xds import envoy_overhead

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "overhead" / "halt_poll"
RUN = ["--seconds", "1.5", "--repeats", "6", "--connections", "4", "--latency-connections", "1", "--tier", "silver",
       "--concurrency", "1", "--tier-timeouts", "2", "--nice", "-10", "--envoy-core", "1", "--only", "shipped"]


def set_poll(ns: int) -> None:
    HALT_POLL.write_text(f"{ns}\n")
    if cpu_idle_settings()["guest_halt_poll_ns"] != ns:
        raise RuntimeError(f"{HALT_POLL} did not take {ns}")


def added_p50(folder: Path) -> dict[str, float]:
    """Per model and connection count: the shipped path's added p50 (median over repeats), ms."""
    summary = json.loads((folder / "summary.json").read_text())
    return {k: m["paths"]["shipped"]["added_p50_ms"] for k, m in summary["models"].items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--poll-ns", type=int, default=200_000, help="the value to compare with (the driver's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    found = cpu_idle_settings()["guest_halt_poll_ns"]
    if found is None:
        raise SystemExit(f"{HALT_POLL} does not exist: this machine is not a KVM guest with the haltpoll driver")
    settings = [found, args.poll_ns]
    rows: dict[int, list[dict[str, float]]] = {ns: [] for ns in settings}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        for r in range(1, args.rounds + 1):
            for ns in settings:
                set_poll(ns)
                folder = args.out / f"poll_{ns}_round{r}"
                print(f"round {r}/{args.rounds}: guest_halt_poll_ns={ns} -> {folder}", flush=True)
                envoy_overhead.main([*RUN, "--out", str(folder)])
                rows[ns].append(added_p50(folder))
    finally:
        set_poll(found)
    keys = sorted(rows[found][0]) if rows[found] else []
    lines = ["# Envoy's added p50 and the guest's idle polling (diagnostic, issue 16 item 7)", "",
             f"Recorded {started} on this 2-core KVM guest (cpuidle driver `{cpu_idle_settings()['cpuidle_driver']}`, "
             f"`guest_halt_poll_ns` = {found} as found, restored after). Command: `PYTHONPATH=. .venv/bin/python -m "
             f"benchmarks.xds.halt_poll_diagnostic --rounds {args.rounds} --poll-ns {args.poll_ns}`. Each cell: the "
             "shipped Envoy chain's added p50 over the direct path (median of 6 repeats within a run), one run per "
             "round and setting, alternating; Envoy on CPU 1 alone, Triton and the client on CPU 0 (the "
             "`envoy_own_core` topology). Each run's own report is in the folder beside this file. Real Triton "
             "(ONNX Runtime on CPU), nothing emulated.", "",
             "This is not the platform as it runs: the polling setting is the machine's, and the platform's figures "
             "(`../README.md`) are measured as found. It says how much of the gap to the +0.5 ms target is the "
             "machine waking idle CPUs.", "",
             "| model x requests in flight | " + " | ".join(f"poll {ns} ns" for ns in settings) + " |",
             "|---|" + "---:|" * len(settings)]
    for k in keys:
        cells = []
        for ns in settings:
            vals = [row[k] for row in rows[ns] if k in row]
            cells.append(f"+{statistics.median(vals):.2f} ms ({', '.join(f'{v:+.2f}' for v in vals)})" if vals else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "Target (issue 16 item 7): +0.5 ms p50 for both models at one request in flight."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps({"recorded": started, "found_poll_ns": found,
                                                       "compared_poll_ns": args.poll_ns, "added_p50_ms": {
                                                           str(ns): rows[ns] for ns in settings}}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
