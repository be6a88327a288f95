"""Per-pool Triton model repositories for the cluster, from the same definitions as the local ones.

    python -m deploy.model_repositories --fleet k8s/base/control/fleet.yaml --out build/deploy/model_repositories

Prints one `pool<TAB>directory` line per repository written. A pool whose accelerator needs an
artifact that only its own hardware can make is refused, never filled with a stand-in:
- gpu: TensorRT plans (`<model>.plan` beside the ONNX in build/models) are built on a g5 with the
  TensorRT of the GPU image; without them the pool's repository would hold no model.
- inferentia: the TorchScript in build/models is a CPU trace; a Neuron one comes from
  `torch_neuronx.trace` on an inf2 with the Inferentia image, put at build/models/neuron/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from model_repository.definitions import load_models
from model_repository.triton_config import Target, write_repository

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "build" / "models"
TARGET_BY_ACCELERATOR = {"cpu": "cpu", "gpu": "gpu", "inferentia": "inferentia"}


def missing_artifacts(accelerator: str, model_names: list[str], artifacts: Path) -> list[str]:
    if accelerator == "gpu":
        return [f"{artifacts}/{m}.plan" for m in model_names if not (artifacts / f"{m}.plan").exists()]
    if accelerator == "inferentia":
        neuron = artifacts / "neuron"
        return [] if neuron.is_dir() and any(neuron.glob("*.pt")) else [f"{neuron}/*.pt (torch_neuronx traces)"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--pools", nargs="*")
    args = parser.parse_args(argv)

    fleet = yaml.safe_load(args.fleet.read_text())
    models = load_models()
    profiles_dir = REPO / "profiles"
    refused = []
    for pool in fleet["pools"]:
        if args.pools and pool["name"] not in args.pools:
            continue
        accelerator = pool["accelerator"]
        served = sorted({yaml.safe_load(p.read_text())["model"] for p in profiles_dir.glob("*.yaml")
                         if yaml.safe_load(p.read_text())["accelerator"] == accelerator})
        missing = missing_artifacts(accelerator, served, args.artifacts)
        if missing:
            refused.append(f"pool {pool['name']} ({accelerator}): missing {', '.join(missing)}")
            continue
        target = Target(TARGET_BY_ACCELERATOR[accelerator])
        repo = write_repository(args.out / pool["name"], [(models[m], target) for m in served], args.artifacts)
        print(f"{pool['name']}\t{repo}")
    if refused:
        print("refused (see deploy/model_repositories.py for how to make them):\n  " + "\n  ".join(refused),
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
