"""The blockers of a first EKS deploy (issue 13), each checked offline: on the repository (no
problem) and with the blocker put back (the check names it).  Terraform is read from its HCL
(python-hcl2 in .venv-deploy); Kubernetes from the rendered overlays; the add-on charts from their
documented defaults (deploy/chart_defaults.yaml)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from deploy import blockers
from tests.deploy.conftest import REPO, edited, find, tf_with

# -- 1, 2: the control server in the cluster --------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_control_server_discovers_replicas_and_binds_every_interface(env: str, documents) -> None:
    assert blockers.control_server_problems(documents[env]) == []


@pytest.mark.parametrize("flag,expected", [
    ("--discovery=kubernetes", "--discovery=kubernetes"),
    ("--listen-address=0.0.0.0", "--listen-address"),
    ("--envoy-listen-address=0.0.0.0", "--envoy-listen-address"),
])
def test_a_control_server_without_its_cluster_flags_is_refused(flag: str, expected: str, documents) -> None:
    def drop(statefulset: dict) -> None:
        args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
        args.remove(flag)
    problems = blockers.control_server_problems(edited(documents["prod"], "StatefulSet", "xds-control", drop))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("change,expected", [
    (lambda s: s["spec"].update(replicas=1), "one replica"),
    (lambda s: s["spec"]["template"]["spec"]["containers"][0]["args"].remove("--k8s-lease=xds-control"),
     "no --k8s-lease"),
], ids=["single-replica", "no-lease"])
def test_a_control_plane_that_is_not_highly_available_is_refused(change, expected: str, documents) -> None:
    problems = blockers.control_server_problems(edited(documents["prod"], "StatefulSet", "xds-control", change))
    assert any(expected in p for p in problems), problems


def test_a_role_that_cannot_write_the_shared_record_is_refused(documents) -> None:
    def read_only(role: dict) -> None:
        role["rules"] = [r for r in role["rules"] if "configmaps" not in r["resources"]]
    problems = blockers.control_server_problems(edited(documents["prod"], "Role", "xds-control", read_only))
    assert problems == ["control plane: its Role cannot get/create/update configmaps xds-control-state"]


def test_healthz_as_a_probe_is_refused(documents) -> None:
    def probe_healthz(statefulset: dict) -> None:
        statefulset["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] = "/healthz"
    problems = blockers.control_server_problems(edited(documents["prod"], "StatefulSet", "xds-control", probe_healthz))
    assert any("/readyz and /livez" in p for p in problems)


def test_the_cluster_golden_snapshot_listens_on_every_interface() -> None:
    """The LDS listeners the cluster's control server sends, built from the StatefulSet's own flags:
    0.0.0.0 (the local golden file, tests/xds_server/golden/snapshot.yaml, keeps 127.0.0.1).
    After an intended change: UPDATE_GOLDEN=1, then review the diff."""
    from router_lib.policy_types import PolicySettings
    from xds_server import build_snapshot
    from xds_server.examples import three_pools, tiered_routes
    from xds_server.inputs import DataPlaneSettings
    from xds_server.protos import LISTENER, to_dict

    flags = dict(a.split("=", 1) for a in _statefulset_args() if "=" in a)
    settings = DataPlaneSettings(listen_address=flags["--envoy-listen-address"], http_port=int(flags["--http-port"]),
                                 grpc_port=int(flags["--grpc-port"]), total_weight=PolicySettings().total_weight)
    snapshot = build_snapshot(three_pools(), tiered_routes(), settings)
    listeners = {name: {"address": to_dict(m)["address"]} for name, m in snapshot.select(LISTENER).items()}
    text = yaml.safe_dump(listeners, sort_keys=True)
    golden = REPO / "tests" / "deploy" / "golden" / "cluster_listeners.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), "cluster listeners changed: review, then UPDATE_GOLDEN=1 to accept"
    assert {v["address"]["socket_address"]["address"] for v in listeners.values()} == {"0.0.0.0"}


def _statefulset_args() -> list[str]:
    docs = list(yaml.safe_load_all((REPO / "k8s" / "base" / "control" / "statefulset.yaml").read_text()))
    return docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]


# -- 3: the API endpoint ----------------------------------------------------------------------------

def test_the_api_endpoint_is_reachable_from_where_deploys_run(tf) -> None:
    assert blockers.endpoint_access_problems(tf) == []


def test_a_private_only_api_endpoint_is_refused(tmp_path: Path) -> None:
    private = tf_with(tmp_path, "main.tf", "cluster_endpoint_public_access       = true",
                      "cluster_endpoint_public_access       = false")
    assert any("private-only" in p for p in blockers.endpoint_access_problems(private))


def test_an_api_endpoint_open_to_the_world_is_refused(tmp_path: Path) -> None:
    world = tf_with(tmp_path, "main.tf", "cluster_endpoint_public_access_cidrs = var.api_public_access_cidrs",
                    'cluster_endpoint_public_access_cidrs = ["0.0.0.0/0"]')
    assert any("0.0.0.0/0" in p for p in blockers.endpoint_access_problems(world))


# -- 4: service-linked roles -------------------------------------------------------------------------

def test_key_policies_name_only_service_linked_roles_created_first(tf) -> None:
    assert blockers.service_linked_role_problems(tf, dev_uses_spot=True) == []


def test_a_key_policy_naming_the_autoscaling_role_that_may_not_exist_is_refused(tmp_path: Path) -> None:
    literal = ('"arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/autoscaling.amazonaws.com/'
               'AWSServiceRoleForAutoScaling",')
    before = tf_with(tmp_path, "kms.tf", "        local.autoscaling_service_role_arn,", "        " + literal)
    problems = blockers.service_linked_role_problems(before, dev_uses_spot=True)
    assert any("without referring to aws_iam_service_linked_role.autoscaling" in p for p in problems), problems


def test_spot_in_dev_needs_the_spot_service_linked_role(tf, documents) -> None:
    dev_pool = find(documents["dev"], "NodePool", "triton-cpu")[0]
    assert any("spot" in r.get("values", []) for r in dev_pool["spec"]["template"]["spec"]["requirements"])
    without = copy.deepcopy(tf)
    without["resource"] = [r for r in without["resource"] if "spot" not in r.get("aws_iam_service_linked_role", {})]
    assert any("spot.amazonaws.com" in p for p in blockers.service_linked_role_problems(without, dev_uses_spot=True))


# -- 5: Istio's ports, network policies ---------------------------------------------------------------

def test_the_control_plane_reaches_istiod_on_the_nodes(tf) -> None:
    assert blockers.istio_port_problems(tf) == []


def test_without_the_webhook_rule_injection_is_reported(tmp_path: Path) -> None:
    before = tf_with(tmp_path, "main.tf", "from_port                     = 15017", "from_port                     = 15018")
    problems = blockers.istio_port_problems(before)
    assert len(problems) == 1 and "15017" in problems[0] and "sidecar-injection webhook" in problems[0]


def test_network_policies_are_enforced(tf, documents) -> None:
    assert blockers.network_policy_problems(tf, documents["prod"]) == []
    off = copy.deepcopy(tf)
    eks = next(m["eks"] for m in off["module"] if "eks" in m)
    eks["cluster_addons"][0]["vpc-cni"] = {"before_compute": True}
    assert any("enableNetworkPolicy" in p for p in blockers.network_policy_problems(off, documents["prod"]))


# -- 6: the AMI pin ----------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_node_images_have_accelerator_variants(env: str, documents) -> None:
    assert blockers.ami_pin_problems(documents[env]) == []


def test_prod_pins_an_ami_release(documents) -> None:
    aliases = {t["alias"] for nc in find(documents["prod"], "EC2NodeClass") for t in nc["spec"]["amiSelectorTerms"]}
    assert len(aliases) == 1 and not aliases.pop().endswith("@latest")


def test_the_old_pin_that_predates_nvidia_and_neuron_variants_is_refused(documents) -> None:
    def old_pin(nodeclass: dict) -> None:
        nodeclass["spec"]["amiSelectorTerms"] = [{"alias": "al2023@v20240807"}]
    problems = blockers.ami_pin_problems(edited(documents["prod"], "EC2NodeClass", "triton-gpu", old_pin))
    assert problems == ["EC2NodeClass triton-gpu: al2023@v20240807 predates v20240924, the first AL2023 release with "
                        "NVIDIA and Neuron variants: Karpenter finds no AMI for g5/inf2"]


# -- 7: model delivery -------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_triton_reads_its_models_from_s3_itself(env: str, documents) -> None:
    assert blockers.model_delivery_problems(documents[env]) == []


def test_an_init_container_fetching_models_is_refused(documents) -> None:
    def init_sync(deployment: dict) -> None:
        spec = deployment["spec"]["template"]["spec"]
        spec["initContainers"] = [{"name": "fetch-models", "image": "public.ecr.aws/aws-cli/aws-cli:2.22.35",
                                   "args": ["s3", "sync", "$(MODEL_REPOSITORY_S3)/cpu/", "/models/"]}]
        spec["containers"][0]["args"] = ["--model-repository=/models", *spec["containers"][0]["args"][1:]]
    problems = blockers.model_delivery_problems(edited(documents["prod"], "Deployment", "triton-cpu", init_sync))
    assert any("init containers run before the Istio sidecar" in p for p in problems)
    assert any("is not the S3 repository" in p for p in problems)


# -- 8: what the Triton images must hold for the models uploaded to them ------------------------------

@pytest.mark.parametrize("image", ["cpu", "gpu", "inferentia"])
def test_every_triton_image_can_run_the_tokenizer_model(image: str) -> None:
    dockerfile = (REPO / "triton_images" / image / "Dockerfile").read_text()
    constraints = (REPO / "constraints.txt").read_text()
    for package in ("tokenizers", "numpy"):
        pin = next(line for line in constraints.splitlines() if line.lower().startswith(f"{package}=="))
        assert pin in dockerfile, f"{image} image: the tokenizer model imports {package}; install {pin}"


# -- 9: device plugins ------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_device_plugins_schedule_on_their_accelerator_nodes(env: str, tf, documents) -> None:
    assert blockers.device_plugin_problems(tf, documents[env]) == []


def test_a_gpu_node_without_the_gpu_present_label_gets_no_nvidia_device_plugin(tf, documents) -> None:
    def unlabelled(pool: dict) -> None:
        del pool["spec"]["template"]["metadata"]["labels"]["nvidia.com/gpu.present"]
    problems = blockers.device_plugin_problems(tf, edited(documents["prod"], "NodePool", "triton-gpu", unlabelled))
    assert len(problems) == 1 and "nvidia-device-plugin never schedules on triton-gpu" in problems[0]
    assert "nvidia.com/gpu.present In ['true']" in problems[0]


def test_an_untolerated_taint_is_reported(tf, documents) -> None:
    def retaint(pool: dict) -> None:
        pool["spec"]["template"]["spec"]["taints"] = [{"key": "inference.platform/pool", "value": "inf2",
                                                       "effect": "NoSchedule"}]
    problems = blockers.device_plugin_problems(tf, edited(documents["prod"], "NodePool", "triton-inferentia", retaint))
    assert any("neuron-helm-chart never schedules" in p and "untolerated taint" in p for p in problems)


# -- high items ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_autoscaler_alone_owns_the_pools_replicas(env: str, documents) -> None:
    assert blockers.autoscaler_conflict_problems(documents[env]) == []


def test_a_replica_count_on_an_autoscaled_deployment_is_refused(documents) -> None:
    docs = edited(documents["prod"], "Deployment", "triton-gpu", lambda d: d["spec"].update(replicas=1))
    assert [p.split(" sets")[0] for p in blockers.autoscaler_conflict_problems(docs)] == ["Deployment triton-gpu"]


def test_rollouts_wait_for_the_nlb(documents) -> None:
    assert blockers.nlb_readiness_gate_problems(documents["prod"]) == []
    docs = edited(documents["prod"], "Namespace", "inference",
                  lambda n: n["metadata"]["labels"].pop("elbv2.k8s.aws/pod-readiness-gate-inject"))
    assert any("readiness gate" in p for p in blockers.nlb_readiness_gate_problems(docs))


def test_every_deploy_pushes_a_new_tag_to_the_immutable_repositories(tf) -> None:
    from deploy.cli import image_tag

    repositories = [body for block in tf["resource"] for body in block.get("aws_ecr_repository", {}).values()]
    assert repositories and all(blockers._one(r["image_tag_mutability"]) == "IMMUTABLE" for r in repositories)
    assert image_tag("abc123", 1_800_000_000) != image_tag("abc123", 1_800_000_060)
    assert image_tag("abc123", 1_800_000_000).startswith("abc123-")


def test_grafana_has_no_default_password(tf, tmp_path: Path) -> None:
    assert blockers.grafana_password_problems(tf) == []
    default = tf_with(tmp_path, "monitoring.tf", 'name  = "grafana.adminPassword"', 'name  = "grafana.ingress.enabled"')
    assert blockers.grafana_password_problems(default) == [
        "kube-prometheus-stack: Grafana keeps the chart's default admin password (prom-operator)"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_deciders_read_every_envoy_and_triton_through_prometheus(env: str, documents) -> None:
    assert blockers.fleet_signal_problems(documents[env]) == []


def test_reading_one_envoy_or_the_wrong_triton_job_is_refused(documents) -> None:
    def one_envoy(statefulset: dict) -> None:
        statefulset["spec"]["template"]["spec"]["containers"][0]["args"].remove("--metrics-source=prometheus")
    problems = blockers.fleet_signal_problems(edited(documents["prod"], "StatefulSet", "xds-control", one_envoy))
    assert problems and "whichever Envoy the Service picks" in problems[0]
    docs = edited(documents["prod"], "ServiceMonitor", "triton", lambda m: m["spec"].pop("jobLabel"))
    assert "job ['triton-cpu', 'triton-gpu', 'triton-inferentia']" in blockers.fleet_signal_problems(docs)[0]
