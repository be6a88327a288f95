"""The deploy commands refuse, clearly and without side effects, when no AWS account or cluster is
configured; the account layer they write pins every image by digest and fills every placeholder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from deploy import cli, preflight
from deploy.overlay_inputs import CONSUMED_OUTPUTS, IMAGE_DIRS, MissingOutputError, account_layer
from tests.deploy.conftest import REPO, find, render_overlay, run


class FakeProbe:
    """A machine with the given tools, environment, and command results (argv prefix -> result)."""

    def __init__(self, tools: set[str], env: dict[str, str] | None = None,
                 results: dict[tuple[str, ...], tuple[int, str]] | None = None) -> None:
        self.tools, self._env, self.results = tools, env or {}, results or {}
        self.ran: list[list[str]] = []

    def which(self, tool: str) -> str | None:
        return f"/usr/bin/{tool}" if tool in self.tools else None

    def run(self, argv: Sequence[str], timeout_s: float = 30) -> tuple[int, str]:
        self.ran.append(list(argv))
        for prefix, result in self.results.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return result
        return 0, ""

    def env(self, name: str) -> str | None:
        return self._env.get(name)


NO_CREDENTIALS = {("aws", "sts"): (255, "Unable to locate credentials. You can configure credentials by running \"aws configure\".")}
ALL_TOOLS = {"aws", "kubectl", "docker", "terraform"}


@pytest.mark.parametrize("command", ["deploy-all", "deploy-models", "open-grafana"])
def test_refuses_without_credentials_and_says_how_to_fix(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    probe = FakeProbe(ALL_TOOLS, {"TF_STATE_BUCKET": "state"}, NO_CREDENTIALS)
    assert cli.main([command], probe=probe) == 2
    err = capsys.readouterr().err
    assert f"make {command} refused" in err and "Nothing was changed" in err
    assert "no usable AWS credentials" in err and "AWS_PROFILE" in err
    # Only read-only probes ran: nothing that changes anything.
    assert all(argv[:2] in (["aws", "sts"], ["docker", "info"], ["kubectl", "version"]) for argv in probe.ran)


def test_lists_every_missing_piece_at_once() -> None:
    found = preflight.problems("deploy-all", FakeProbe(set()))
    text = "\n".join(str(p) for p in found)
    for expected in ("`aws` is not installed", "`kubectl` is not installed", "`docker` is not installed",
                     "TF_STATE_BUCKET is not set", "AWS credentials cannot be checked",
                     "TF_VAR_api_public_access_cidrs is not set"):
        assert expected in text


def test_a_docker_client_without_an_engine_is_not_enough() -> None:
    probe = FakeProbe(ALL_TOOLS, {"TF_STATE_BUCKET": "s"}, {("docker", "info"): (1, "Cannot connect to the Docker daemon")})
    assert any("no Docker engine" in p.what for p in preflight.problems("deploy-all", probe))


def test_open_grafana_needs_a_reachable_cluster() -> None:
    probe = FakeProbe(ALL_TOOLS, results={("kubectl", "version"): (1, "connection refused")})
    assert [p.what for p in preflight.problems("open-grafana", probe)] == [
        "no reachable Kubernetes cluster in the current kubeconfig context"]


def test_everything_configured_means_no_problem() -> None:
    env = {"TF_STATE_BUCKET": "s", "TF_VAR_api_public_access_cidrs": '["203.0.113.7/32"]'}
    probe = FakeProbe(ALL_TOOLS, env, {("kubectl", "version"): (0, '{"serverVersion": {}}')})
    for command in ("deploy-all", "deploy-models", "open-grafana"):
        assert preflight.problems(command, probe) == []


def test_make_target_refuses_on_this_machine() -> None:
    """The real command, as `make deploy-all` runs it, on a machine without an AWS account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "TF_STATE_BUCKET"}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(REPO)})
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "deploy.cli", "deploy-all"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "make deploy-all refused" in p.stderr and "TF_STATE_BUCKET is not set" in p.stderr


def _outputs() -> dict[str, dict[str, object]]:
    values: dict[str, object] = {
        "cluster_name": "inference-platform", "region": "us-east-1", "environment": "prod",
        "karpenter_node_role_name": "KarpenterNode-inference-platform",
        "ebs_kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
        "model_bucket_name": "inference-platform-models-abc",
        "triton_role_arn": "arn:aws:iam::123456789012:role/inference-platform-triton-x",
        "ecr_repository_urls": {n: f"123456789012.dkr.ecr.us-east-1.amazonaws.com/inference-platform/{n}" for n in IMAGE_DIRS},
    }
    assert set(values) == set(CONSUMED_OUTPUTS)
    return {k: {"value": v, "type": "string", "sensitive": False} for k, v in values.items()}


DIGESTS = {n: "sha256:" + f"{i:x}" * 64 for i, n in enumerate(sorted(IMAGE_DIRS), start=1)}


def test_account_layer_renders_with_every_placeholder_filled(tmp_path: Path) -> None:
    layer_dir = tmp_path / "layer"
    layer_dir.mkdir()
    overlay = os.path.relpath(REPO / "k8s" / "overlays" / "prod", layer_dir)
    (layer_dir / "kustomization.yaml").write_text(yaml.safe_dump(account_layer(_outputs(), DIGESTS, overlay)))
    text = render_overlay(layer_dir)
    assert "set-at-deploy" not in text and "000000000000" not in text
    docs = [d for d in yaml.safe_load_all(text) if d]
    for w in [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]:
        for c in w["spec"]["template"]["spec"]["containers"]:
            assert "@sha256:" in c["image"] and c["image"].startswith("123456789012.dkr.ecr."), c["image"]
    nodeclass = find(docs, "EC2NodeClass", "triton-gpu")[0]["spec"]
    assert nodeclass["role"] == "KarpenterNode-inference-platform"
    assert nodeclass["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"] == "inference-platform"
    deploy_settings = find(docs, "ConfigMap", "platform-deploy")[0]["data"]
    assert deploy_settings["model_repository_s3"] == "s3://inference-platform-models-abc"
    assert deploy_settings["aws_region"] == "us-east-1"  # Triton's S3 client reads AWS_DEFAULT_REGION from it


def test_account_layer_refuses_missing_outputs_and_unpushed_images() -> None:
    outputs = _outputs()
    del outputs["triton_role_arn"]
    with pytest.raises(MissingOutputError, match="triton_role_arn"):
        account_layer(outputs, DIGESTS, "../overlay")
    with pytest.raises(ValueError, match="no pushed digest"):
        account_layer(_outputs(), {}, "../overlay")


def test_deploy_models_refuses_pools_whose_accelerator_artifacts_are_missing(tmp_path: Path) -> None:
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.fail("main venv missing: make setup")
    p = run([python, "-m", "deploy.model_repositories", "--fleet", REPO / "k8s" / "base" / "control" / "fleet.yaml",
             "--out", tmp_path / "repos", "--artifacts", tmp_path / "no-artifacts", "--pools", "gpu", "inf2"])
    assert p.returncode == 3
    assert "pool gpu (gpu): missing" in p.stderr and "pool inf2 (inferentia): missing" in p.stderr
    assert p.stdout == ""


def test_deploy_models_writes_the_cpu_pools_repository_from_the_built_models(tmp_path: Path) -> None:
    artifacts = REPO / "build" / "models"
    if not (artifacts / "text_embedding.onnx").exists():
        pytest.fail("build/models is not built: `make models` (part of `make setup`)")
    p = run([REPO / ".venv" / "bin" / "python", "-m", "deploy.model_repositories",
             "--fleet", REPO / "k8s" / "base" / "control" / "fleet.yaml", "--out", tmp_path / "repos", "--pools", "cpu"])
    assert p.returncode == 0, p.stderr
    pool, path = p.stdout.strip().split("\t")
    repo = Path(path)
    assert pool == "cpu"
    configs = {c.parent.name: c.read_text() for c in repo.glob("*/config.pbtxt")}
    assert {"text_embedding", "text_embedding_onnx", "text_embedding_tokenizer", "digits_classifier"} <= set(configs)
    assert 'backend: "onnxruntime"' in configs["digits_classifier"]
    assert (repo / "digits_classifier" / "1" / "model.onnx").exists()
