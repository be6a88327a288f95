"""``python -m profiler``: compile, profile, diff, plot.

  compile  build each target's artifact from the model's ONNX and gate it on accuracy
  profile  benchmark on Triton (started here, or --url) and write profiles/<model>.<acc>.yaml
  diff     compare two profiles; exit 1 on a regression (canaries)
  plot     latency vs throughput PNG from a profile run's JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from localnet.signals import interrupt_on_stop_signals

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARTIFACTS = ROOT / "build" / "models"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _check_for(model_name: str, artifacts: Path, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from model_repository.definitions import load_models
    from profiler import accuracy

    model = load_models()[model_name]
    if any(t.data_type == "TYPE_STRING" for t in model.inputs):
        return accuracy.text_embedding_check(artifacts, args.min_cosine)
    if model_name == "digits_classifier":
        return accuracy.classifier_check(artifacts, artifacts / model.accelerated.artifact, args.max_accuracy_drop)
    # Any other model (an onboarded one): its outputs against ONNX Runtime fp32 on its sample inputs.
    from profiler.accuracy_generic import check_for_model

    return check_for_model(model, artifacts)


def cmd_compile(args: argparse.Namespace) -> int:
    from model_repository.definitions import load_models
    from profiler.compile import compile_model

    models = load_models()
    report = []
    for name in args.model or sorted(models):
        bar = tqdm(total=6, desc=f"compile {name}", unit="step")

        def step(what: str, bar: tqdm = bar) -> None:
            bar.set_postfix_str(what)
            bar.update(1)

        variants = compile_model(models[name], args.artifacts, args.out / name, _check_for(name, args.artifacts, args),
                                 progress=step)
        bar.close()
        for v in variants:
            print(f"{name}: {v.line()}")
            report.append({"model": name, "target": v.target, "variant": v.name, "status": v.status,
                           "detail": v.detail, "path": str(v.path) if v.path else None, "metrics": v.metrics,
                           "seconds": round(v.seconds, 2)})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _variant_path(name: str, variant: str, args: argparse.Namespace) -> Path | None:
    """None for the built fp32 artifact; otherwise compile ``variant`` and insist it passed the gate."""
    if variant == "fp32":
        return None
    from model_repository.definitions import load_models
    from profiler.compile import compile_onnxruntime

    model = load_models()[name]
    [v] = compile_onnxruntime(args.artifacts / model.accelerated.artifact, args.variants_dir / name,
                              _check_for(name, args.artifacts, args), variants=(variant,))
    print(f"{name}: {v.line()}")
    if not v.usable:
        raise SystemExit(f"{name}: variant {variant} is not usable, so it is not profiled")
    return v.path


def cmd_profile(args: argparse.Namespace) -> int:
    from model_repository.definitions import load_models
    from profiler.bench import SweepPlan
    from profiler.plot import plot_runs
    from profiler.profile_io import write_profile
    from profiler.run import markdown, profile_model, run_record
    from reporting.results_io import write_results
    from router_lib.config import load_prices, load_profile, load_tiers

    models = load_models()
    tiers, prices = load_tiers(args.tiers), load_prices(args.prices)
    records = []
    for name in args.model or sorted(models):
        model = models[name]
        out_path = args.profiles_dir / f"{name}.{args.accelerator}.yaml"
        instances = args.instances
        if instances is None:  # keep what the pool is configured with (its profile says it)
            instances = load_profile(out_path).instances_per_replica if out_path.exists() else 1
        batches = args.batch_sizes or tuple(sorted({1, min(8, model.max_batch_size), model.max_batch_size}))
        plan = SweepPlan(batches, args.concurrency, args.warmup_s, args.measure_s, args.min_requests)
        bar = tqdm(total=len(plan.settings()), desc=f"profile {name}", unit="setting")

        def step(setting: tuple[int, int], bar: tqdm = bar) -> None:
            bar.set_postfix_str(f"done: batch {setting[0]} conc {setting[1]}")
            bar.update(1)

        run = profile_model(model, args.artifacts, plan, tiers=tiers, prices=prices, instance_type=args.instance_type,
                            accelerator=args.accelerator, instances=instances, url=args.url,
                            variant=args.variant, variant_path=_variant_path(name, args.variant, args), progress=step)
        bar.close()
        record = run_record(run, model)
        records.append(record)
        print(markdown(record))
        if args.write_profile:
            write_profile(out_path, run.document)
            print(f"wrote {out_path}")
    if args.results:
        md = "\n\n".join(markdown(r) for r in records)
        write_results(args.results, args.name, {"runs": records}, f"# Profiler run\n\n{md}")
        png = plot_runs(records, args.results / f"{args.name}.png")
        print(f"results: {args.results / (args.name + '.json')}, plot: {png}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from profiler.diff import IncomparableProfiles, diff_profiles, render
    from router_lib.config import ConfigError, load_profile

    try:
        diff = diff_profiles(load_profile(args.baseline), load_profile(args.candidate), args.threshold)
    except (ConfigError, IncomparableProfiles) as e:
        print(f"cannot compare: {e}", file=sys.stderr)
        return 2
    print(render(diff, args.threshold))
    return 1 if diff.regressions else 0


def cmd_plot(args: argparse.Namespace) -> int:
    from profiler.plot import plot_runs

    data = json.loads(args.results_json.read_text())
    print(plot_runs(data["runs"], args.png))
    return 0


def _write_online(args: argparse.Namespace) -> int:
    from profiler.online import cmd_write_online

    return cmd_write_online(args)


def parser() -> argparse.ArgumentParser:
    from profiler.accuracy import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MIN_COSINE
    from profiler.diff import DEFAULT_THRESHOLD

    ap = argparse.ArgumentParser(prog="python -m profiler", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", action="append", help="model name (repeatable; default: every model)")
        p.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="built models (make models)")
        p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE, help="embedding accuracy gate")
        p.add_argument("--max-accuracy-drop", type=float, default=DEFAULT_MAX_ACCURACY_DROP,
                       help="classifier accuracy gate (absolute)")

    c = sub.add_parser("compile", help="build and accuracy-gate each target's artifact")
    common(c)
    c.add_argument("--out", type=Path, default=ROOT / "build" / "profiler" / "variants")
    c.add_argument("--json", type=Path, help="also write the report as JSON here")
    c.set_defaults(func=cmd_compile)

    p = sub.add_parser("profile", help="benchmark on Triton and write the profile")
    common(p)
    p.add_argument("--url", help="gRPC host:port of a running Triton serving the model (default: start one here)")
    p.add_argument("--instances", type=int, help="model instances of a local Triton (default: the existing profile's)")
    p.add_argument("--variant", default="fp32", choices=["fp32", "ort_optimized", "int8_per_tensor", "int8_per_channel"])
    p.add_argument("--variants-dir", type=Path, default=ROOT / "build" / "profiler" / "variants")
    p.add_argument("--batch-sizes", type=_ints, help="request batch sizes (default: 1, 8, max)")
    p.add_argument("--concurrency", type=_ints, default=(1, 2, 4, 8), help="requests in flight (must include 1)")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--measure-s", type=float, default=3.0)
    p.add_argument("--min-requests", type=int, default=30, help="keep a window open (up to 4x) for this many")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--instance-type", default="c7g.xlarge", help="priced instance the pool runs on")
    p.add_argument("--tiers", type=Path, default=ROOT / "data" / "tiers.yaml")
    p.add_argument("--prices", type=Path, default=ROOT / "data" / "prices.yaml")
    p.add_argument("--profiles-dir", type=Path, default=ROOT / "profiles")
    p.add_argument("--no-write", dest="write_profile", action="store_false", help="do not write the profile")
    p.add_argument("--results", type=Path, help="folder for <name>.json/.md/.png")
    p.add_argument("--name", default="profile_run")
    p.set_defaults(func=cmd_profile)

    d = sub.add_parser("diff", help="compare two profiles; exit 1 on regression, 2 if incomparable")
    d.add_argument("baseline", type=Path)
    d.add_argument("candidate", type=Path)
    d.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="relative change that fails")
    d.set_defaults(func=cmd_diff)

    w = sub.add_parser("write-online", help="write a profile learned online back as <model>.<accelerator>.online.yaml")
    w.add_argument("--model", required=True)
    w.add_argument("--pool", required=True, help="the pool whose calibration to write")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--status", help="a control server's /status URL, or a saved copy of it")
    src.add_argument("--state", type=Path, help="the control server's state record (with --fleet)")
    w.add_argument("--fleet", type=Path, default=ROOT / "fleet.yaml", help="the fleet file (with --state)")
    w.add_argument("--profiles-dir", type=Path, default=ROOT / "profiles")
    w.add_argument("--machine", help="what the calibration ran on (default: this machine, described)")
    w.add_argument("--allow-emulated", action="store_true", help="write an emulated pool's calibration too")
    w.set_defaults(func=_write_online)

    g = sub.add_parser("plot", help="PNG from a profile run's JSON")
    g.add_argument("results_json", type=Path)
    g.add_argument("png", type=Path)
    g.set_defaults(func=cmd_plot)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    interrupt_on_stop_signals()  # the Triton it profiles is stopped on SIGTERM or SIGHUP too (localnet.signals)
    sys.exit(main())
