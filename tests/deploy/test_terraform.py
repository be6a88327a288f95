"""Terraform: formatted, provider-free modules validate and pass `terraform test`, checkov passes,
and every output the k8s deploy step consumes exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.overlay_inputs import CONSUMED_OUTPUTS
from tests.deploy.conftest import KUBERNETES_VERSION, REPO, deploy_tool, run

TERRAFORM = REPO / "terraform"
PROVIDER_FREE_MODULES = [REPO / "terraform" / "modules" / "platform_catalog"]


def terraform(*args: str | Path, cwd: Path, tmp_path: Path) -> tuple[int, str]:
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text("")
    p = run([deploy_tool("python"), REPO / "deploy" / "tf.py", *args], cwd=cwd,
            env={"TF_DATA_DIR": str(tmp_path / "tfdata"), "TF_CLI_CONFIG_FILE": str(cli_config),
                 "TF_IN_AUTOMATION": "1", "NO_COLOR": "1"})
    return p.returncode, p.stdout + p.stderr


def test_everything_is_formatted(tmp_path: Path) -> None:
    code, out = terraform("fmt", "-check", "-recursive", cwd=TERRAFORM, tmp_path=tmp_path)
    assert code == 0, f"unformatted: {out}"


@pytest.mark.parametrize("module", PROVIDER_FREE_MODULES, ids=lambda p: p.name)
def test_provider_free_module_validates_and_its_tests_pass(module: Path, tmp_path: Path) -> None:
    for step in (["init", "-backend=false", "-input=false", "-no-color"], ["validate", "-no-color"],
                 ["test", "-no-color"]):
        code, out = terraform(*step, cwd=module, tmp_path=tmp_path)
        assert code == 0, f"terraform {step[0]}: {out}"
    assert "0 failed" in out


def test_checkov_finds_nothing_unjustified() -> None:
    p = run([deploy_tool("checkov"), "--skip-download", "--quiet", "--compact", "--framework", "terraform",
             "-d", TERRAFORM])
    assert p.returncode == 0, p.stdout[-4000:]


def test_every_checkov_skip_says_why() -> None:
    for tf in TERRAFORM.rglob("*.tf"):
        for line in tf.read_text().splitlines():
            if "checkov:skip=" in line:
                _, _, rest = line.partition("checkov:skip=")
                check, _, reason = rest.partition(":")
                assert check.startswith("CKV") and len(reason.strip()) > 30, f"{tf.name}: {line.strip()}"


def _declared(kind: str) -> set[str]:
    names: set[str] = set()
    for tf in TERRAFORM.glob("*.tf"):
        names |= set(re.findall(rf'^{kind}\s+"([^"]+)"', tf.read_text(), flags=re.M))
    return names


def test_outputs_the_overlays_consume_exist() -> None:
    missing = set(CONSUMED_OUTPUTS) - _declared("output")
    assert not missing, f"deploy/overlay_inputs.py reads outputs terraform/outputs.tf lacks: {sorted(missing)}"


def test_every_variable_is_described_and_the_risky_ones_validated() -> None:
    text = "\n".join(tf.read_text() for tf in TERRAFORM.glob("*.tf"))
    blocks = re.findall(r'^variable\s+"([^"]+)"\s+\{(.*?)^\}', text, flags=re.M | re.S)
    assert blocks
    for name, body in blocks:
        assert "description" in body, name
    validated = {name for name, body in blocks if "validation" in body}
    assert {"name", "region", "environment", "vpc_cidr", "kubernetes_version", "availability_zones"} <= validated


def test_modules_are_pinned_to_exact_versions() -> None:
    modules = [m for tf in TERRAFORM.glob("*.tf")
               for m in re.findall(r'^module\s+"([^"]+)"\s+\{(.*?)^\}', tf.read_text(), flags=re.M | re.S)]
    assert len(modules) >= 5
    for name, body in modules:
        source = re.search(r'source\s+=\s+"([^"]+)"', body)
        assert source, name
        if source.group(1).startswith("./"):
            continue
        assert re.search(r'version\s+=\s+"\d+\.\d+\.\d+"', body), f"module {name}: {source.group(1)} not pinned"


def test_manifests_target_the_cluster_version() -> None:
    default = re.search(r'variable "kubernetes_version".*?default\s+=\s+"([\d.]+)"',
                        (TERRAFORM / "variables.tf").read_text(), flags=re.S)
    assert default and KUBERNETES_VERSION.startswith(default.group(1) + ".")
