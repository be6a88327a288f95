"""Does the profiler measure throughput right?  Its closed-loop generator (``profiler.bench``)
against a plain threaded tritonclient loop at the same concurrency, same model, same payloads, on
one Triton, in alternating rounds (noise on this shared 2-core machine hits both alike).  Agreement is the
difference of the two medians over the rounds; per-round differences are kept to show the noise.

Run: ``PYTHONPATH=. .venv/bin/python -m benchmarks.profiler.vs_plain_loop``.  Target: the median
per-round disagreement within 15%.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from tqdm import tqdm

from benchmarks.common import ROOT, write_results
from benchmarks.profiler.plain_loop import plain_loop_requests_per_s
from localnet.signals import interrupt_on_stop_signals
from model_repository.definitions import load_models
from profiler.bench import closed_loop
from profiler.inputs import output_names, request_sets
from profiler.local_triton import local_triton

TARGET = 0.15


def compare(url: str, model_name: str, artifacts: Path, batch_size: int, concurrency: int, rounds: int,
            seconds: float) -> list[dict[str, float]]:
    model = load_models()[model_name]
    sets = request_sets(model, artifacts, batch_size)
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    rows = []
    try:
        for i in tqdm(range(rounds), desc=f"{model_name} b{batch_size} c{concurrency} (profiler, plain)"):
            def profiler_run() -> tuple[float, int]:
                lat, errors, window = closed_loop(clients, model.name, sets, output_names(model), concurrency, 1.0,
                                                  seconds)
                return len(lat) / window, errors

            # Alternate which goes first, so a drift in background load does not favour either.
            if i % 2 == 0:
                profiler_rps, errors = profiler_run()
                plain_rps = plain_loop_requests_per_s(url, model.name, sets, concurrency, seconds)
            else:
                plain_rps = plain_loop_requests_per_s(url, model.name, sets, concurrency, seconds)
                profiler_rps, errors = profiler_run()
            rows.append({"profiler_requests_per_s": profiler_rps, "plain_loop_requests_per_s": plain_rps,
                         "relative_difference": (profiler_rps - plain_rps) / plain_rps, "profiler_errors": errors})
    finally:
        for c in clients:
            c.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "profiler" / "results")
    args = ap.parse_args(argv)
    models = load_models()
    # (model, instances, batch, concurrency): the embedding model as the CPU pool serves it, and the
    # classifier, whose sub-millisecond requests stress the client side most.
    settings = [("text_embedding", 2, 1, 4), ("digits_classifier", 1, 1, 4)]
    results: list[dict[str, Any]] = []
    for name, instances, batch, conc in settings:
        with local_triton(models[name], args.artifacts, instances) as server:
            rows = compare(server.grpc_url, name, args.artifacts, batch, conc, args.rounds, args.seconds)
        prof = statistics.median(r["profiler_requests_per_s"] for r in rows)
        plain = statistics.median(r["plain_loop_requests_per_s"] for r in rows)
        agreement = (prof - plain) / plain
        results.append({"model": name, "instances": instances, "batch_size": batch, "concurrency": conc,
                        "rounds": rows, "median_profiler_requests_per_s": prof, "median_plain_loop_requests_per_s": plain,
                        "relative_difference_of_medians": agreement,
                        "median_abs_relative_difference_per_round": statistics.median(
                            abs(r["relative_difference"]) for r in rows),
                        "met": abs(agreement) <= TARGET})
    md = ["# Profiler load generator vs a plain tritonclient loop", "",
          "Same Triton, model, payloads and concurrency; rounds alternate the two "
          f"({args.seconds:g} s windows after 1 s warm-up). Target: within {TARGET:.0%}.", "",
          "| model | batch | conc. | round | profiler req/s | plain loop req/s | difference |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for i, r in enumerate(res["rounds"]):
            md.append(f"| {res['model']} | {res['batch_size']} | {res['concurrency']} | {i + 1} | "
                      f"{r['profiler_requests_per_s']:.1f} | {r['plain_loop_requests_per_s']:.1f} | "
                      f"{r['relative_difference']:+.1%} |")
    md.append("")
    for res in results:
        md.append(f"- {res['model']}: medians {res['median_profiler_requests_per_s']:.1f} vs "
                  f"{res['median_plain_loop_requests_per_s']:.1f} req/s: **{res['relative_difference_of_medians']:+.1%}** "
                  f"({'within' if res['met'] else 'NOT within'} {TARGET:.0%}); per-round |difference| median "
                  f"{res['median_abs_relative_difference_per_round']:.1%}")
    json_path, _ = write_results(args.out, "vs_plain_loop", {"settings": results, "target": TARGET}, "\n".join(md))
    print("\n".join(md))
    print(f"results: {json_path}")
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
