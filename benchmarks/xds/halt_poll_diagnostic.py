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
from pathlib import Path
from typing import Any

from benchmarks.common import HALT_POLL, cpu_idle_settings
from benchmarks.xds import envoy_overhead
from localnet.signals import interrupt_on_stop_signals

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "overhead" / "halt_poll"
RUN = ["--seconds", "1.5", "--repeats", "6", "--connections", "4", "--latency-connections", "1", "--tier", "silver",
       "--concurrency", "1", "--tier-timeouts", "2", "--nice", "-10", "--envoy-core", "1", "--only", "shipped"]


def set_poll(ns: int) -> None:
    HALT_POLL.write_text(f"{ns}\n")
    if cpu_idle_settings()["guest_halt_poll_ns"] != ns:
        raise RuntimeError(f"{HALT_POLL} did not take {ns}")


def run_summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())  # type: ignore[no-any-return]


def folder_of(out: Path, ns: int, round_: int) -> Path:
    return out / f"poll_{ns}_round{round_}"


TARGET_MS = 0.5  # issue 16 item 7: Envoy's added p50


def write_report(out: Path, found: int, poll_ns: int, rounds: int) -> str:
    """README.md and summary.json from the runs' own folders (``envoy_overhead`` wrote them)."""
    settings = [found, poll_ns]
    runs = {ns: [run_summary(folder_of(out, ns, r)) for r in range(1, rounds + 1)] for ns in settings}
    added = {ns: [{k: m["paths"]["shipped"]["added_p50_ms"] for k, m in s["models"].items()} for s in runs[ns]]
             for ns in settings}
    loads = [s["load_average_1m"] for ns in settings for s in runs[ns]]
    idle = json.loads((folder_of(out, found, 1) / "raw.json").read_text()).get("cpu_idle") or {}
    lines = ["# Envoy's added p50 and the guest's idle polling (diagnostic, issue 16 item 7)", "",
             f"Recorded {runs[found][0]['date_utc']} on this 2-core KVM guest (cpuidle driver "
             f"`{idle.get('cpuidle_driver')}`, `guest_halt_poll_ns` = {found} as found, restored after), shared with "
             f"other sessions' work: 1-minute load average {min(s['min'] for s in loads):.2f} .. "
             f"{max(s['max'] for s in loads):.2f} over the runs' phases. Command: `PYTHONPATH=. .venv/bin/python -m "
             f"benchmarks.xds.halt_poll_diagnostic --rounds {rounds} --poll-ns {poll_ns}` (`--reanalyse` rewrites "
             "this file from the run folders without touching the setting). Each cell: the shipped Envoy chain's "
             "added p50 over the direct path, the baseline (median of 6 repeats within a run; direct and Envoy "
             "phases interleaved in every repeat), one run per round and setting, alternating; Envoy on CPU 1 "
             "alone, Triton and the client on CPU 0 (the `envoy_own_core` topology). Each run's own report is in "
             "the folder beside this file. Real Triton (ONNX Runtime on CPU), nothing emulated, real outputs.", "",
             "This is not the platform as it runs: the polling setting is the machine's, and the platform's figures "
             "(`../README.md`) are measured as found. It says how much of the gap to the target is the machine "
             "waking idle CPUs.", "",
             "| model x requests in flight | " + " | ".join(f"poll {ns} ns" for ns in settings) + " |",
             "|---|" + "---:|" * len(settings)]
    for k in sorted(added[found][0]):
        cells = []
        for ns in settings:
            vals = [row[k] for row in added[ns]]
            med = statistics.median(vals)
            cells.append(f"{med:+.2f} ms ({', '.join(f'{v:+.2f}' for v in vals)}): "
                         f"{'met' if med <= TARGET_MS else 'missed'}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", f"Target (issue 16 item 7): added p50 <= +{TARGET_MS} ms for both models (met / missed per cell, "
              "on the median of the rounds). Throughput is in each run's own report."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"recorded": runs[found][0]["date_utc"], "found_poll_ns": found,
                                                  "compared_poll_ns": poll_ns, "rounds": rounds,
                                                  "added_p50_ms": {str(ns): added[ns] for ns in settings}},
                                                 indent=1) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--poll-ns", type=int, default=200_000, help="the value to compare with (the driver's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--reanalyse", action="store_true", help="rewrite the report from the run folders of --out")
    args = ap.parse_args(argv)
    if args.reanalyse:
        recorded = json.loads((args.out / "summary.json").read_text())
        print(write_report(args.out, recorded["found_poll_ns"], recorded["compared_poll_ns"], recorded["rounds"]))
        return
    found = cpu_idle_settings()["guest_halt_poll_ns"]
    if not isinstance(found, int):
        raise SystemExit(f"{HALT_POLL} does not exist: this machine is not a KVM guest with the haltpoll driver")
    try:
        for r in range(1, args.rounds + 1):
            for ns in (found, args.poll_ns):
                set_poll(ns)
                folder = folder_of(args.out, ns, r)
                print(f"round {r}/{args.rounds}: guest_halt_poll_ns={ns} -> {folder}", flush=True)
                envoy_overhead.main([*RUN, "--out", str(folder)])
    finally:
        set_poll(found)
    print(write_report(args.out, found, args.poll_ns, args.rounds))


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
