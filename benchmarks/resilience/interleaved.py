"""The frame the single-replica probes share (``host_step_priority``, ``batcher_wakeup``): the
command line, variants interleaved in every repeat (alternating order), and the run's metadata."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def parse_args(description: str, argv: list[str] | None, *, repeats: int, seconds: float,
               out: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0:
        parser.error("--repeats must be >= 1 and --seconds > 0")
    return args


def run_interleaved(variants: Sequence[str], repeats: int, prefix: str,
                    run_once: Callable[[str, int, Path], Any],
                    progress: Callable[[int, str, Any], str]) -> dict[str, list[Any]]:
    """``run_once(variant, repeat, workdir)`` for every variant in every repeat, forward then
    backward order, each in a fresh temporary folder; ``progress`` says one line per run."""
    runs: dict[str, list[Any]] = {v: [] for v in variants}
    for repeat in range(repeats):
        for variant in variants if repeat % 2 == 0 else tuple(reversed(variants)):
            with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
                runs[variant].append(run_once(variant, repeat, Path(tmp)))
            print(f"repeat {repeat + 1}/{repeats} {variant}: {progress(repeat, variant, runs[variant][-1])}", flush=True)
    return runs


def meta(args: argparse.Namespace, module: str, load_before: float, **extra: Any) -> dict[str, Any]:
    return {"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs, shared with other work",
            "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
            "repeats": args.repeats, "seconds": args.seconds, **extra,
            "command": f"python -m {module} --repeats {args.repeats} --seconds {args.seconds:g}"}
