"""Shared fixtures of the offline deployment checks (issue 7).

The checkers live in .venv-deploy (made by `make deploy-tools`), apart from the serving venv; the
tests call them by path and skip, saying so, only when that venv is absent. Node's CRD validators
live in deploy/npm/node_modules; promtool comes from Debian's prometheus; kubectl renders kustomize.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY_BIN = REPO / ".venv-deploy" / "bin"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.31.0"  # EKS version in terraform/variables.tf (drift-tested)


def deploy_tool(name: str) -> Path:
    if not (DEPLOY_BIN / "python").exists():
        pytest.skip("deploy tools venv .venv-deploy is absent: run `make deploy-tools`")
    path = DEPLOY_BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing although .venv-deploy exists: rerun `make deploy-tools`")
    return path


def system_tool(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        if not (DEPLOY_BIN / "python").exists():
            pytest.skip(f"{name} is absent and so is .venv-deploy: run `make deploy-tools`")
        pytest.fail(f"`{name}` not found: {how}")
    return path


def run(argv: Sequence[str | Path], *, cwd: Path = REPO, env: dict[str, str] | None = None,
        timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def render_overlay(path: Path) -> str:
    kubectl = system_tool("kubectl", "install kubectl (it renders kustomize offline)")
    p = run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", path])
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay rendered to a file: {"dev": path, "prod": path}."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for env in OVERLAYS:
        f = out / env / f"{env}.yaml"
        f.parent.mkdir()
        f.write_text(render_overlay(REPO / "k8s" / "overlays" / env))
        files[env] = f
    return files


@pytest.fixture(scope="session")
def documents(rendered: dict[str, Path]) -> dict[str, list[dict]]:
    return {env: [d for d in yaml.safe_load_all(f.read_text()) if d] for env, f in rendered.items()}


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def python_for_generators() -> str:
    """The generators need only PyYAML + router_lib (and grafana-foundation-sdk for dashboards)."""
    return str(DEPLOY_BIN / "python") if (DEPLOY_BIN / "python").exists() else sys.executable


# -- the Terraform root module read from its HCL (deploy/blockers.py), and documents edited ------------

TERRAFORM = REPO / "terraform"


@pytest.fixture(scope="module")
def tf() -> dict:
    from deploy import blockers

    if not (DEPLOY_BIN / "python").exists():
        pytest.skip("deploy tools venv .venv-deploy is absent: run `make deploy-tools`")
    return blockers.load_terraform(TERRAFORM)


def tf_with(tmp_path: Path, file: str, old: str, new: str) -> dict:
    """The root module with one file's text changed (the blocker put back)."""
    from deploy import blockers

    copy_dir = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy_dir, ignore=shutil.ignore_patterns(".terraform*", "modules"))
    text = (copy_dir / file).read_text()
    assert old in text, f"{file} no longer contains {old!r}: update this test"
    (copy_dir / file).write_text(text.replace(old, new))
    return blockers.load_terraform(copy_dir)


def edited(docs: list[dict], kind: str, name: str, change: Callable[[dict], None]) -> list[dict]:
    docs = copy.deepcopy(docs)
    change(find(docs, kind, name)[0])
    return docs
