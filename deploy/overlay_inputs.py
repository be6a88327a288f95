"""The account-specific layer over a k8s overlay, built from `terraform output -json`.

The committed overlays (k8s/overlays/dev|prod) hold everything that is the same in every account;
what differs (ECR images and their digests, IRSA role, cluster name for Karpenter's discovery tags,
KMS key, model bucket) comes from Terraform's outputs and is written by this module as one more
kustomization at deploy time (build/deploy/<env>/kustomization.yaml). Pure: outputs in, dict out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Every Terraform output read here; tests/deploy/test_terraform.py checks terraform/outputs.tf has each.
CONSUMED_OUTPUTS = (
    "cluster_name",
    "region",
    "environment",
    "karpenter_node_role_name",
    "ebs_kms_key_arn",
    "model_bucket_name",
    "triton_role_arn",
    "ecr_repository_urls",
)

# Image names as written in k8s/base (kustomization images[].name), one per triton_images/<dir>.
IMAGE_DIRS = {
    "triton-cpu": "triton_images/cpu",
    "triton-gpu": "triton_images/gpu",
    "triton-inferentia": "triton_images/inferentia",
    "xds-control": "triton_images/control",
    "envoy-gateway": "triton_images/envoy",
}
# Platforms each image is built for (Graviton system nodes and CPU pool: arm64).
IMAGE_PLATFORMS = {
    "triton-cpu": "linux/arm64",
    "triton-gpu": "linux/amd64",
    "triton-inferentia": "linux/amd64",
    "xds-control": "linux/arm64",
    "envoy-gateway": "linux/arm64",
}

EC2_NODE_CLASSES = ("triton-cpu", "triton-gpu", "triton-inferentia")


class MissingOutputError(ValueError):
    pass


def _value(outputs: Mapping[str, Any], name: str) -> Any:
    """`terraform output -json` wraps each value as {"value": ..., "type": ..., "sensitive": ...}."""
    if name not in outputs:
        raise MissingOutputError(f"terraform output {name!r} is missing; run `terraform apply` first")
    entry = outputs[name]
    return entry["value"] if isinstance(entry, Mapping) and "value" in entry else entry


def _json_patch(kind: str, name: str | None, ops: list[dict[str, Any]]) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": kind}
    if name:
        target["name"] = name
    return {"target": target, "patch": json.dumps(ops)}


def account_layer(outputs: Mapping[str, Any], image_digests: Mapping[str, str], overlay_path: str) -> dict[str, Any]:
    """The kustomization that puts `overlay_path` (relative to where it is written) in this account.

    image_digests: image name -> "sha256:..." as pushed; every image of IMAGE_DIRS is required, so
    nothing runs by tag.
    """
    values = {name: _value(outputs, name) for name in CONSUMED_OUTPUTS}
    repos: Mapping[str, str] = values["ecr_repository_urls"]
    missing = sorted(set(IMAGE_DIRS) - set(repos))
    if missing:
        raise MissingOutputError(f"ecr_repository_urls has no repository for {missing}")
    undigested = sorted(set(IMAGE_DIRS) - set(image_digests))
    if undigested:
        raise ValueError(f"no pushed digest for {undigested}: build and push the images first")
    for name, digest in image_digests.items():
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise ValueError(f"image {name}: digest must be sha256:<64 hex>, got {digest!r}")

    cluster, kms = values["cluster_name"], values["ebs_kms_key_arn"]
    node_class_ops = [
        {"op": "replace", "path": "/spec/role", "value": values["karpenter_node_role_name"]},
        {"op": "replace", "path": "/spec/subnetSelectorTerms/0/tags/karpenter.sh~1discovery", "value": cluster},
        {"op": "replace", "path": "/spec/securityGroupSelectorTerms/0/tags/karpenter.sh~1discovery", "value": cluster},
        {"op": "replace", "path": "/spec/blockDeviceMappings/0/ebs/kmsKeyID", "value": kms},
    ]
    patches = [_json_patch("EC2NodeClass", name, node_class_ops) for name in EC2_NODE_CLASSES]
    patches += [
        _json_patch("ServiceAccount", "triton", [
            {"op": "replace", "path": "/metadata/annotations/eks.amazonaws.com~1role-arn",
             "value": values["triton_role_arn"]}]),
        _json_patch("ConfigMap", "platform-deploy", [
            {"op": "replace", "path": "/data/model_repository_s3", "value": f"s3://{values['model_bucket_name']}"},
            {"op": "replace", "path": "/data/aws_region", "value": str(values["region"])}]),
    ]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [overlay_path],
        "images": [{"name": name, "newName": repos[name], "digest": image_digests[name]} for name in sorted(IMAGE_DIRS)],
        "patches": patches,
    }
