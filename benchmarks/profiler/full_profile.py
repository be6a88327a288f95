"""The full profile run: compile both sample models for every target, profile the CPU pool for both
on a real local Triton, write ``profiles/<model>.cpu.yaml``, and keep the results and the plot.

Run: ``PYTHONPATH=. .venv/bin/python -m benchmarks.profiler.full_profile`` (about 5 minutes here;
bounded: every window is capped at 4x its length).  Results: ``benchmarks/profiler/results/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import ROOT, write_results
from localnet.signals import interrupt_on_stop_signals
from model_repository.definitions import load_models
from profiler.accuracy import classifier_check, text_embedding_check
from profiler.bench import SweepPlan
from profiler.compile import compile_model
from profiler.plot import plot_runs
from profiler.profile_io import write_profile
from profiler.run import markdown, profile_model, run_record
from router_lib.config import load_prices, load_profile, load_tiers

# Instances as the CPU pool is configured (2 for the embedding model: this machine's 2 cores; the
# classifier's sub-millisecond requests are bound by the gRPC hop, one instance suffices).
PLANS = {
    "text_embedding": (2, SweepPlan((1, 4, 16, 32), (1, 2, 4, 8), warmup_s=1.0, measure_s=3.0, min_requests=30)),
    "digits_classifier": (1, SweepPlan((1, 8, 32, 64), (1, 2, 4, 8), warmup_s=1.0, measure_s=3.0, min_requests=30)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--profiles-dir", type=Path, default=ROOT / "profiles")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "profiler" / "results")
    args = ap.parse_args(argv)
    models = load_models()
    tiers, prices = load_tiers(ROOT / "data" / "tiers.yaml"), load_prices(ROOT / "data" / "prices.yaml")
    compiled = []
    checks = {"text_embedding": text_embedding_check(args.artifacts),
              "digits_classifier": classifier_check(args.artifacts, args.artifacts / "digits_classifier.onnx")}
    for name, check in checks.items():
        for v in compile_model(models[name], args.artifacts, ROOT / "build" / "profiler" / "variants" / name, check):
            print(f"{name}: {v.line()}")
            compiled.append({"model": name, "target": v.target, "variant": v.name, "status": v.status,
                             "detail": v.detail, "metrics": v.metrics, "seconds": round(v.seconds, 2)})
    records = []
    for name, (instances, plan) in PLANS.items():
        bar = tqdm(total=len(plan.settings()), desc=f"profile {name}", unit="setting")

        def step(setting: tuple[int, int], bar: tqdm = bar) -> None:
            bar.set_postfix_str(f"done: batch {setting[0]} conc {setting[1]}")
            bar.update(1)

        run = profile_model(models[name], args.artifacts, plan, tiers=tiers, prices=prices, instance_type="c7g.xlarge",
                            instances=instances, progress=step)
        bar.close()
        records.append(run_record(run, models[name]))
        path = args.profiles_dir / f"{name}.cpu.yaml"
        write_profile(path, run.document)
        load_profile(path)
        print(markdown(records[-1]))
    compile_md = ["## Compile (accuracy-gated variants)", "", "| model | target/variant | status | detail |", "|---|---|---|---|"]
    compile_md += [f"| {c['model']} | {c['target']}/{c['variant']} | {c['status']} | {c['detail']} |" for c in compiled]
    md = "# Full profile run (CPU pool, both sample models)\n\n" + "\n".join(compile_md) + "\n\n" + \
        "\n\n".join(markdown(r) for r in records) + "\n\n![latency vs throughput](full_profile.png)"
    json_path, _ = write_results(args.out, "full_profile", {"compile": compiled, "runs": records}, md)
    plot_runs(records, args.out / "full_profile.png")
    print(f"results: {json_path}")
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
