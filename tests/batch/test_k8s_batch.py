"""k8s/batch renders, validates (core kinds strictly, KEDA against its CRD schema, checkov), and
agrees with the code: the queues KEDA watches are the ones the AWS store writes, and the IAM
policy grants exactly the calls the store makes, on the batch resources only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from batch.store_aws import PRIORITY_QUEUES
from tests.deploy.conftest import KUBERNETES_VERSION, REPO, deploy_tool, run, system_tool

BATCH = REPO / "k8s" / "batch"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    p = run([system_tool("kubectl", "install kubectl"), "kustomize", BATCH])
    assert p.returncode == 0, p.stderr
    out = tmp_path_factory.mktemp("batch-k8s") / "batch.yaml"
    out.write_text(p.stdout)
    return out


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_core_kinds_validate_strictly(rendered):
    p = run([deploy_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, rendered])
    assert p.returncode == 0, p.stdout + p.stderr


def test_keda_objects_validate_against_the_crd_schema(rendered):
    node_modules = REPO / "deploy" / "npm" / "node_modules" / "@kubernetes-models"
    if not node_modules.is_dir():
        deploy_tool("python")
        pytest.fail("deploy/npm/node_modules missing: run `make deploy-tools`")
    p = run([system_tool("node", "install node"), REPO / "deploy" / "npm" / "validate-crds.mjs", rendered])
    assert p.returncode == 0 and "invalid: 0, unknown kinds: 0" in p.stdout, p.stdout + p.stderr


def test_checkov_finds_nothing_unjustified(rendered):
    p = run([deploy_tool("checkov"), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes",
             "-f", rendered])
    assert p.returncode == 0, p.stdout[-3000:]


def test_keda_watches_every_queue_the_store_writes(rendered):
    [scaled] = [d for d in docs(rendered) if d["kind"] == "ScaledObject"]
    urls = [t["metadata"]["queueURL"] for t in scaled["spec"]["triggers"]]
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == sorted(f"batch-jobs-{q}" for q, _ in PRIORITY_QUEUES)
    assert scaled["spec"]["minReplicaCount"] == 0, "no job, no worker"
    [config] = [d for d in docs(rendered) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "batch-deploy"]
    assert "queue=batch-jobs" in config["data"]["store"] and config["data"]["store"].startswith("s3://")


def test_iam_grants_exactly_what_the_store_calls_on_batch_resources_only():
    policy = json.loads((BATCH / "iam-policy.json").read_text())
    granted = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    source = (REPO / "batch" / "store_aws.py").read_text()
    calls = set(re.findall(r"self\.(sqs|s3)\.(\w+)\(", source))
    called = {f"{svc}:{''.join(w.title() for w in op.split('_'))}" for svc, op in calls if op != "get_paginator"}
    called = {c.replace("s3:ListObjectsV2", "s3:ListBucket").replace("s3:HeadObject", "s3:GetObject")
              .replace("sqs:SendMessageBatch", "sqs:SendMessage") for c in called | {"s3:ListObjectsV2"}}
    assert granted == called, f"granted but unused: {granted - called}; used but not granted: {called - granted}"
    for s in policy["Statement"]:
        assert "*" not in s["Action"] and s["Resource"] != "*"
        assert "batch" in s["Resource"] or s.get("Condition"), s
