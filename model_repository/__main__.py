"""``python -m model_repository add | remove | list``: bring your own ONNX model (docs/models.md).

  add     onboard an ONNX model onto every pool: checks, Triton configs, compile + accuracy gate,
          CPU profile, GPU/Inferentia estimates, registration with the fleet
  remove  take an onboarded model off every pool (its description, artifacts and profiles)
  list    the onboarded models, what they take and return, where they run

``add`` composes the profiler (compile, gate, benchmark on a local Triton), which sits above this
package (tests/test_layering.py), so this command hands it over to ``python -m profiler.onboarding``
as a process; ``remove`` and ``list`` only touch this package's files and run here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from model_repository.definitions import load_builtin_models, load_models, user_models_dir
from model_repository.user_models import description_path, read_description
from router_lib.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _profiles_dir(fleet: Path) -> Path:
    import yaml

    data = yaml.safe_load(fleet.read_text()) if fleet.is_file() else None
    rel = data.get("profiles", "profiles") if isinstance(data, dict) else "profiles"
    return (fleet.parent / rel).resolve()


def remove(name: str, store: Path, artifacts: Path, profiles: Path) -> list[Path]:
    """Delete ``name``'s description, artifacts, onboarding outputs and profiles; -> what was removed.
    ``ValueError`` when ``name`` is built in or not onboarded."""
    import yaml

    if name in load_builtin_models():
        raise ValueError(f"{name!r} is a built-in model (model_repository/models.yaml); only onboarded models "
                         "can be removed")
    path = description_path(store, name)
    if not path.exists():
        known = sorted(p.stem for p in store.glob("*.yaml")) if store.is_dir() else []
        raise ValueError(f"no onboarded model {name!r} in {store}; onboarded: {known}")
    model, _ = read_description(path, expected_name=name)
    removed = [path]
    candidates = [artifacts / model.accelerated.artifact, artifacts / f"{name}.samples.npz",
                  (artifacts / model.accelerated.artifact).with_suffix(".plan")]
    if model.accelerated.torchscript_artifact:
        candidates.append(artifacts / model.accelerated.torchscript_artifact)
    candidates += [artifacts / f for step in model.host_steps for f in step.files]
    for p in sorted(profiles.glob(f"{name}.*.yaml")) if profiles.is_dir() else []:
        data = yaml.safe_load(p.read_text())
        if isinstance(data, dict) and data.get("model") == name:
            candidates.append(p)
    path.unlink()
    for p in candidates:
        if p.exists():
            p.unlink()
            removed.append(p)
    onboarding = artifacts / "onboarding" / name
    if onboarding.exists():
        shutil.rmtree(onboarding)
        removed.append(onboarding)
    return removed


def listing(store: Path, artifacts: Path, profiles: Path) -> str:
    models = {n: m for n, m in load_models(user_dir=store).items() if m.origin != "built-in"}
    if not models:
        return f"no onboarded models in {store} (built-in: {', '.join(sorted(load_builtin_models()))})"
    lines = ["| model | inputs | outputs | max batch | host CPU on | profiles | artifact |", "|---|---|---|---|---|---|---|"]
    for name, m in sorted(models.items()):
        have = sorted(p.name.split(".")[1] for p in profiles.glob(f"{name}.*.yaml")) if profiles.is_dir() else []
        art = artifacts / m.accelerated.artifact
        lines.append(
            f"| {name} | {', '.join(f'{t.name} {t.data_type[5:]} {list(t.dims)}' for t in m.inputs)} "
            f"| {', '.join(f'{t.name} {t.data_type[5:]} {list(t.dims)}' for t in m.outputs)} | {m.max_batch_size} "
            f"| {', '.join(sorted(m.host_cpu_on)) or '-'} | {', '.join(have) or 'none'} "
            f"| {'present' if art.exists() else 'MISSING: run add again'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "add":
        sys.stdout.flush()
        # A process boundary, not an import: profiler is a layer above this package.
        os.execv(sys.executable, [sys.executable, "-m", "profiler.onboarding", *argv])
    ap = argparse.ArgumentParser(prog="python -m model_repository",
                                 description="Bring your own ONNX model: add, remove, list (docs/models.md)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("add", help="onboard an ONNX model onto every pool (python -m model_repository add --help)")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", type=Path, default=user_models_dir(), help="where onboarded models' descriptions live")
        p.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models")
        p.add_argument("--fleet", type=Path, default=ROOT / "fleet.yaml")
        p.add_argument("--profiles", type=Path, help="profiles folder (default: the fleet file's)")

    r = sub.add_parser("remove", help="take an onboarded model off every pool")
    r.add_argument("name")
    common(r)
    b = sub.add_parser("list", help="the onboarded models")
    common(b)
    args = ap.parse_args(argv)
    profiles = args.profiles or _profiles_dir(args.fleet)
    try:
        if args.command == "remove":
            for p in remove(args.name, args.store, args.artifacts, profiles):
                print(f"removed {p}")
            print(f"{args.name} is off every pool from the next `make up`")
        else:
            print(listing(args.store, args.artifacts, profiles))
    except (ValueError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
