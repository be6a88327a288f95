"""The kustomize overlays render, lint clean, and validate against Kubernetes' and the CRDs' schemas."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import KUBERNETES_VERSION, OVERLAYS, REPO, deploy_tool, find, run

NODE_VALIDATOR = REPO / "deploy" / "npm" / "validate-crds.mjs"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def node_validator() -> list[str]:
    node = shutil.which("node")
    if node is None or not (REPO / "deploy" / "npm" / "node_modules" / "@kubernetes-models").is_dir():
        deploy_tool("python")  # skips when the deploy tools were never installed
        pytest.fail("node or deploy/npm/node_modules missing: run `make deploy-tools`")
    return [node, str(NODE_VALIDATOR)]


def test_yaml_sources_lint_clean() -> None:
    p = run([deploy_tool("yamllint"), "-c", "deploy/yamllint.yaml", "--strict", "k8s", "alerts", "deploy/yamllint.yaml"])
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("env", OVERLAYS)
def test_core_kinds_validate_strictly(env: str, rendered: dict[str, Path]) -> None:
    p = run([deploy_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, rendered[env]])
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("ERROR")]
    assert p.returncode == 0 and not errors, "\n".join(errors) or p.stdout + p.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n")
    p = run([deploy_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, bad])
    assert p.returncode != 0


@pytest.mark.parametrize("env", OVERLAYS)
def test_custom_resources_validate_against_their_crd_schemas(env: str, rendered: dict[str, Path]) -> None:
    p = run([*node_validator(), rendered[env]])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "invalid: 0, unknown kinds: 0" in p.stdout


def test_crd_validator_rejects_a_bad_nodepool(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "x"},
            "requirements": [{"key": "kubernetes.io/arch", "operator": "Bogus"}]}}}}))
    p = run([*node_validator(), bad])
    assert p.returncode == 1 and "operator" in p.stderr


def test_crd_validator_refuses_a_kind_it_cannot_check(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    p = run([*node_validator(), unknown])
    assert p.returncode == 2


@pytest.mark.parametrize("env", OVERLAYS)
def test_checkov_finds_nothing_unjustified(env: str, rendered: dict[str, Path]) -> None:
    p = run([deploy_tool("checkov"), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes",
             "-d", rendered[env].parent])
    assert p.returncode == 0, p.stdout[-4000:]


def test_every_checkov_skip_says_why(documents: dict[str, list[dict]]) -> None:
    for d in documents["prod"]:
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check.startswith("CKV") and len(reason) > 30, f"{d['kind']}/{d['metadata']['name']}: {value}"


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_container_is_bounded_and_unprivileged(env: str, documents: dict[str, list[dict]]) -> None:
    for w in [d for d in documents[env] if d["kind"] in WORKLOAD_KINDS]:
        pod = w["spec"]["template"]["spec"]
        where = f"{env} {w['kind']}/{w['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert {"requests", "limits"} <= set(c["resources"]), f"{where} {c['name']}: resources"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where


def test_each_pool_lands_only_on_its_accelerator(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    expect = {
        "triton-cpu": ("triton-cpu", "inference.platform/pool", None),
        "triton-gpu": ("triton-gpu", "nvidia.com/gpu", "nvidia.com/gpu"),
        "triton-inferentia": ("triton-inferentia", "aws.amazon.com/neuron", "aws.amazon.com/neuron"),
    }
    for name, (nodepool, taint_key, device) in expect.items():
        pod = find(docs, "Deployment", name)[0]["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["karpenter.sh/nodepool"] == nodepool
        assert any(t["key"] == taint_key for t in pod["tolerations"])
        taints = find(docs, "NodePool", nodepool)[0]["spec"]["template"]["spec"]["taints"]
        assert any(t["key"] == taint_key for t in taints), f"NodePool {nodepool} must taint {taint_key}"
        limits = pod["containers"][0]["resources"]["limits"]
        if device:
            assert limits[device] == "1"


def test_every_workload_has_a_disruption_budget(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    budgets = [p["spec"]["selector"]["matchLabels"] for p in find(docs, "PodDisruptionBudget")]
    for w in find(docs, "Deployment") + find(docs, "StatefulSet"):
        labels = w["spec"]["selector"]["matchLabels"]
        assert any(b.items() <= labels.items() for b in budgets), w["metadata"]["name"]


def test_namespace_is_strict_mtls_and_deny_by_default(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    default = find(docs, "PeerAuthentication", "default")[0]
    assert default["spec"]["mtls"]["mode"] == "STRICT" and "selector" not in default["spec"]
    assert find(docs, "AuthorizationPolicy", "deny-all")[0]["spec"] == {}
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")[0]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_the_gateway_is_an_nlb(documents: dict[str, list[dict]]) -> None:
    svc = find(documents["prod"], "Service", "envoy-gateway")[0]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"


def test_prod_pins_node_images_and_dev_may_follow_latest(documents: dict[str, list[dict]]) -> None:
    for nc in find(documents["prod"], "EC2NodeClass"):
        assert all(not t["alias"].endswith("@latest") for t in nc["spec"]["amiSelectorTerms"]), nc["metadata"]["name"]
