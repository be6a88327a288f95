"""Per-pool Triton model repositories for the cluster, from the same definitions as the local ones.

    python -m deploy.model_repositories --fleet k8s/base/control/fleet.yaml --out build/deploy/model_repositories

Prints one `pool<TAB>directory` line per repository written, and exits 3 naming every pool it
refused (the repositories it could write are still written and printed, so `make deploy-models`
uploads those). A pool whose accelerator needs an artifact that only its own hardware can make is
refused, never filled with a stand-in:
- gpu: TensorRT plans (`<model>.plan` beside the ONNX in build/models) are built on a g5 with the
  TensorRT of the GPU image. Only graphs TensorRT can parse need one: a graph using an operator
  domain other than the default (`ai.onnx.ml` tree ensembles: the digits classifier) runs on the
  g5 with the ONNX Runtime backend on its host CPU, as on the CPU pool (`placement_on_gpu`).
- inferentia: the TorchScript in build/models is a CPU trace; a Neuron one comes from
  `torch_neuronx.trace` on an inf2 with the Inferentia image, put at build/models/neuron/ under the
  same name. A CPU trace there is refused (`is_neuron_trace`), and the deployed model.py fails to
  load without torch_neuronx instead of falling back to the CPU.

What is uploaded must load in the image with nothing else beside it: the local repositories link
into this source tree and their Python models import project modules through a bootstrap that
looks for the tree. `make_self_contained` copies every linked file and vendors the imported
project modules next to each `model.py` (tests/deploy/test_model_delivery.py loads the result in
a real tritonserver from a directory outside the repository).
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import zipfile
from pathlib import Path

import yaml

from model_repository.definitions import ModelDefinition, load_models
from model_repository.triton_config import Target, TierSharing, tier_sharing, write_model
from router_lib.config import load_fleet

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "build" / "models"
TARGET_BY_ACCELERATOR = {"cpu": "cpu", "gpu": "gpu", "inferentia": "inferentia"}
# ONNX operator domains TensorRT's ONNX parser implements: the default one only.
TENSORRT_DOMAINS = frozenset({"", "ai.onnx"})
BOOTSTRAP_MARKER = '_boot["add_project_root"](__file__)'
VENDORED = ("import sys  # noqa: E402  (deploy/model_repositories.py: project modules are vendored beside this file)\n"
            "sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n")


def onnx_domains(path: Path) -> frozenset[str]:
    """Every operator domain an ONNX graph imports or uses (``""`` is the default domain)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    used = {node.domain for node in model.graph.node}
    return frozenset({o.domain for o in model.opset_import} | used)


def placement_on_gpu(model: ModelDefinition, artifacts: Path) -> str:
    """``"gpu"`` (a TensorRT plan) or ``"cpu"`` (ONNX Runtime on the g5's host CPU).

    TensorRT parses only default-domain ONNX; a tree ensemble (``ai.onnx.ml``) would be refused at
    load and, with ``--exit-on-error``, crash-loop the pool.  ONNX Runtime's CUDA provider has no
    kernels for those operators either (they would fall back to its CPU provider anyway), and
    Triton's FIL backend would need the forest re-exported as Treelite/XGBoost: for a 100-tree
    forest on 64 features the host CPU serves in well under a millisecond, so the honest choice is
    the CPU pool's own config on the g5's CPU."""
    domains = onnx_domains(artifacts / model.accelerated.artifact)
    return "gpu" if domains <= TENSORRT_DOMAINS else "cpu"


def missing_artifacts(accelerator: str, models: list[ModelDefinition], artifacts: Path) -> list[str]:
    if accelerator == "gpu":
        onnx = [artifacts / m.accelerated.artifact for m in models]
        if not all(p.exists() for p in onnx):  # placement reads the graph: build it first
            return [f"{p} (make models)" for p in onnx if not p.exists()]
        plans = [artifacts / Path(m.accelerated.artifact).with_suffix(".plan") for m in models
                 if placement_on_gpu(m, artifacts) == "gpu"]
        return [str(p) for p in plans if not p.exists()]
    if accelerator == "inferentia":
        missing = []
        for m in models:
            if not m.accelerated.torchscript_artifact:
                continue  # no Inferentia variant (profiles list none for it)
            trace = artifacts / "neuron" / m.accelerated.torchscript_artifact
            if not trace.exists():
                missing.append(f"{trace} (torch_neuronx trace)")
            elif not is_neuron_trace(trace):
                missing.append(f"{trace} (a CPU torch.jit trace: Neuron needs torch_neuronx.trace on an inf2)")
        return missing
    return []


def is_neuron_trace(path: Path) -> bool:
    """A TorchScript archive made by ``torch_neuronx.trace``: its code calls the Neuron runtime
    (``torch.ops.neuron`` / ``torch.classes.neuron``); a CPU ``torch.jit.trace`` has no such call."""
    with zipfile.ZipFile(path) as archive:
        return any(b"neuron" in archive.read(name) for name in archive.namelist()
                   if "/code/" in name and name.endswith(".py"))


def neuron_artifacts(artifacts: Path, work: Path) -> Path:
    """``artifacts`` with each TorchScript replaced by its Neuron trace (``artifacts/neuron/``)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for path in artifacts.iterdir():
        if path.is_file():
            neuron = artifacts / "neuron" / path.name
            (work / path.name).symlink_to((neuron if neuron.exists() else path).resolve())
    return work


def _project_imports(source: str) -> set[str]:
    """Top-level project modules a file imports (``model_repository.text_tokenizer`` -> its path)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n for n in names if n.split(".")[0] in ("model_repository", "router_lib")}
    return found


def _vendor(module: str, into: Path, done: set[str]) -> None:
    if module in done:
        return
    done.add(module)
    source_path = REPO.joinpath(*module.split(".")).with_suffix(".py")
    if not source_path.exists():  # a package: module/__init__.py
        source_path = REPO.joinpath(*module.split("."), "__init__.py")
    target = into.joinpath(*module.split(".")).with_suffix(".py") if source_path.name != "__init__.py" \
        else into.joinpath(*module.split("."), "__init__.py")
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = module.split(".")
    for depth in range(1, len(parts)):
        init = into.joinpath(*parts[:depth], "__init__.py")
        if not init.exists():
            init.write_text("")  # a namespace for the vendored modules only, not the package's own __init__
    source = source_path.read_text()
    target.write_text(source)
    for dependency in _project_imports(source):
        _vendor(dependency, into, done)


# In the Inferentia image torch_neuronx must load: without it the traced graph cannot run, and a
# silent fallback would serve nothing (or the CPU, priced as inf2). The deployed model.py says so.
NEURON_FALLBACK = "except ImportError:\n    NEURON = False\n"
NEURON_REQUIRED = ("except ImportError as e:  # deployed (deploy/model_repositories.py): Neuron or nothing\n"
                   "    raise ImportError(\"torch_neuronx is missing: this model runs only in the Inferentia image \"\n"
                   "                      \"(triton_images/inferentia)\") from e\n")


def make_self_contained(repo: Path) -> list[str]:
    """Replace links by copies and vendor each Python model's project imports; returns what was vendored."""
    for path in sorted(repo.rglob("*")):
        if path.is_symlink():
            real = path.resolve()
            path.unlink()
            shutil.copy2(real, path)
    vendored: list[str] = []
    for model_py in sorted(repo.rglob("model.py")):
        source = model_py.read_text()
        if "import torch_neuronx" in source:
            if NEURON_FALLBACK not in source:
                raise ValueError(f"{model_py}: cannot find its torch_neuronx fallback to make it an error; "
                                 "update NEURON_FALLBACK in deploy/model_repositories.py")
            model_py.write_text(source.replace(NEURON_FALLBACK, NEURON_REQUIRED))
            continue
        if BOOTSTRAP_MARKER not in source:
            continue
        lines = [line for line in source.splitlines(keepends=True)
                 if not line.startswith("_boot = runpy.run_path(")]
        source = "".join(lines).replace(BOOTSTRAP_MARKER + "\n", VENDORED)
        model_py.write_text(source)
        done: set[str] = set()
        for module in sorted(_project_imports(source)):
            _vendor(module, model_py.parent, done)
        vendored += sorted(f"{model_py.parent.relative_to(repo)}/{m}" for m in done)
    return vendored


def write_pool_repository(out: Path, accelerator: str, models: list[ModelDefinition], artifacts: Path,
                          sharing: dict[str, TierSharing] | None = None) -> Path:
    """``sharing``: model name -> its priority levels and batch cap, for a pool the tiers share
    (fleet file ``share_tiers``, docs/overload.md); none: one FIFO queue per model."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    source = neuron_artifacts(artifacts, out.parent / f".{out.name}-artifacts") if accelerator == "inferentia" \
        else artifacts
    for model in models:
        kind = TARGET_BY_ACCELERATOR[accelerator]
        if accelerator == "gpu":
            kind = placement_on_gpu(model, artifacts)
        write_model(out, model, Target(kind, sharing=(sharing or {}).get(model.name)), source)
    make_self_contained(out)
    return out


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
        definitions = [models[m] for m in served]
        missing = missing_artifacts(accelerator, definitions, args.artifacts)
        if missing:
            refused.append(f"pool {pool['name']} ({accelerator}): missing {', '.join(missing)}")
            continue
        sharing = None
        if pool.get("share_tiers"):  # the validated fleet's tiers and profiles give the levels and caps
            loaded = load_fleet(args.fleet)
            spec = loaded.pool(pool["name"])
            sharing = {d.name: tier_sharing(loaded.tiers, profile) for d in definitions
                       if (profile := loaded.profile(d.name, spec.accelerator)) is not None}
        repo = write_pool_repository(args.out / pool["name"], accelerator, definitions, args.artifacts, sharing)
        print(f"{pool['name']}\t{repo}", flush=True)
    if refused:
        print("refused (see deploy/model_repositories.py for how to make them):\n  " + "\n  ".join(refused),
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
