"""Monitoring on EKS (issue 13, high items), checked offline, each on the repository and with the
item put back: Alertmanager's receivers and routes (terraform's templatefile, the chart's default
merged under it, the real amtool), Prometheus and Alertmanager on EBS volumes of a StorageClass
terraform creates, and the DCGM exporter / neuron-monitor on exactly their NodePools' nodes,
scraped by Prometheus.  The checks are in deploy/monitoring_checks.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from deploy import blockers
from deploy import monitoring_checks as checks
from tests.deploy.conftest import REPO, TERRAFORM, deploy_tool, edited, find, tf_with

RULES = REPO / "alerts" / "rules.yaml"
# A few of kube-prometheus-stack's own alerts (its default rules), by severity.
CHART_ALERTS = [{"alertname": "KubeAPIDown", "severity": "critical"},
                {"alertname": "KubePodCrashLooping", "severity": "warning", "namespace": "inference"},
                {"alertname": "TargetDown", "severity": "warning", "job": "triton"}]


@pytest.fixture(scope="module")
def amtool() -> str:
    """Alertmanager 0.25's amtool, which `make deploy-tools` takes out of Debian's package."""
    return str(deploy_tool("amtool"))


@pytest.fixture(scope="module")
def configs(tf) -> dict:
    return checks.alertmanager_configs(tf, TERRAFORM)


def _route(amtool: str, config: dict, tmp_path: Path, **labels: str) -> list[str]:
    import subprocess

    import yaml

    path = tmp_path / "am.yaml"
    path.write_text(yaml.safe_dump(config))
    p = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}",
                        *[f"{k}={v}" for k, v in labels.items()]], capture_output=True, text=True, check=True)
    return p.stdout.strip().split(",")


# -- Alertmanager ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(checks.ALERTMANAGER_VARIANTS))
def test_every_alert_rule_reaches_someone(variant: str, configs: dict, amtool: str) -> None:
    alerts = checks.alert_rules(RULES) + CHART_ALERTS
    assert len(alerts) > 10
    assert checks.alertmanager_routing_problems(configs[variant], alerts, amtool) == []


def test_pages_go_to_sns_and_warnings_to_the_team(configs: dict, amtool: str, tmp_path: Path) -> None:
    sns, slack = configs["sns"], configs["sns+slack"]
    assert _route(amtool, sns, tmp_path, alertname="ControlPlaneDown", severity="page") == ["oncall"]
    assert _route(amtool, sns, tmp_path, alertname="PoolUnhealthy", severity="warning", pool="gpu") == ["team"]
    receivers = {r["name"]: r for r in slack["receivers"]}
    assert set(receivers["oncall"]) == {"name", "sns_configs", "slack_configs"}
    assert set(receivers["team"]) == {"name", "slack_configs"}, "with Slack, warnings go to chat, not email"
    assert set({r["name"]: r for r in sns["receivers"]}["team"]) == {"name", "sns_configs"}
    # Anything unrouted lands with the team, not in the chart's default "null".
    assert _route(amtool, sns, tmp_path, alertname="SomethingNew") == ["team"]


def test_the_charts_always_firing_and_info_alerts_are_dropped_on_purpose(configs: dict, amtool: str,
                                                                         tmp_path: Path) -> None:
    assert _route(amtool, configs["sns"], tmp_path, alertname="Watchdog", severity="none") == ["null"]
    assert _route(amtool, configs["sns"], tmp_path, alertname="CPUThrottlingHigh", severity="info") == ["null"]


def test_the_charts_default_config_routes_every_alert_to_nobody(tmp_path: Path, amtool: str) -> None:
    without = tf_with(tmp_path, "monitoring.tf", "config         = local.alertmanager_config", "")
    configs = checks.alertmanager_configs(without, tmp_path / "terraform")
    problems = checks.alertmanager_routing_problems(configs["sns"], checks.alert_rules(RULES), amtool)
    assert "alert alertname=ControlPlaneDown, severity=page reaches nobody: routed to ['null'], " \
           "which notify no one" in problems
    assert len(problems) == len({tuple(sorted(a.items())) for a in checks.alert_rules(RULES)})


def test_amtool_refuses_a_field_the_running_alertmanager_may_not_know(configs: dict, amtool: str) -> None:
    broken = copy.deepcopy(configs["sns"])
    broken["receivers"].append({"name": "hook", "webhook_configs": [{"url_file": "/etc/x"}]})
    problems = checks.alertmanager_routing_problems(broken, [], amtool)
    assert len(problems) == 1 and "amtool check-config refuses" in problems[0] and "url_file" in problems[0]


def test_a_page_that_only_reaches_chat_is_refused(configs: dict, amtool: str) -> None:
    chat_only = copy.deepcopy(configs["sns+slack"])
    for receiver in chat_only["receivers"]:
        receiver.pop("sns_configs", None)
    problems = checks.alertmanager_routing_problems(chat_only, [{"alertname": "EnvoyNotConnected",
                                                                 "severity": "page"}], amtool)
    assert problems == ["alert alertname=EnvoyNotConnected, severity=page pages only a chat channel (['oncall']); "
                        "pages need a paging receiver"]


def test_the_receivers_can_deliver(tf, configs: dict) -> None:
    assert checks.alertmanager_delivery_problems(tf, configs) == []


def test_sns_without_the_irsa_role_is_refused(tmp_path: Path, configs: dict) -> None:
    unsigned = tf_with(tmp_path, "monitoring.tf",
                       'serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.alertmanager_irsa.iam_role_arn } }',
                       "")
    assert any("no IRSA role" in p for p in checks.alertmanager_delivery_problems(unsigned, configs))


def test_a_slack_webhook_outside_a_mounted_secret_is_refused(tmp_path: Path, configs: dict) -> None:
    unmounted = tf_with(tmp_path, "monitoring.tf", "secrets = local.alertmanager_secrets", "secrets = []")
    problems = checks.alertmanager_delivery_problems(unmounted, configs)
    assert problems and all("not in a Secret listed in alertmanagerSpec.secrets" in p for p in problems)


# -- Prometheus storage ------------------------------------------------------------------------------

def test_prometheus_and_alertmanager_keep_their_data_on_ebs(tf) -> None:
    assert checks.prometheus_storage_problems(tf) == []


def test_prometheus_on_emptydir_is_refused(tmp_path: Path) -> None:
    empty = tf_with(tmp_path, "monitoring.tf", "storageSpec = {", "storageSpecUnused = {")
    assert checks.prometheus_storage_problems(empty) == [
        "Prometheus keeps its data on emptyDir (no prometheus.prometheusSpec.storageSpec.volumeClaimTemplate): "
        "a restarted or rescheduled pod starts empty"]


def test_a_storage_class_terraform_does_not_create_is_refused(tmp_path: Path) -> None:
    """The StorageClass used to live in k8s/base, applied after the chart: the claims stayed Pending."""
    later = tf_with(tmp_path, "monitoring.tf", "storageClassName = kubernetes_storage_class_v1.gp3_encrypted.metadata[0].name",
                    'storageClassName = "gp3-encrypted"')
    problems = checks.prometheus_storage_problems(later)
    assert len(problems) == 2 and all("which terraform does not create before the chart" in p for p in problems)


def test_the_storage_class_needs_the_ebs_csi_driver_and_its_key(tf) -> None:
    no_driver = copy.deepcopy(tf)
    eks = next(m["eks"] for m in no_driver["module"] if "eks" in m)
    del eks["cluster_addons"][0]["aws-ebs-csi-driver"]
    assert any("add aws-ebs-csi-driver" in p for p in checks.prometheus_storage_problems(no_driver))
    no_key = copy.deepcopy(tf)
    irsa = next(m["ebs_csi_irsa"] for m in no_key["module"] if "ebs_csi_irsa" in m)
    irsa["ebs_csi_kms_cmk_ids"] = [[]]
    assert any("ebs_csi_kms_cmk_ids" in p for p in checks.prometheus_storage_problems(no_key))


def test_retention_must_also_bound_the_size(tmp_path: Path) -> None:
    unbounded = tf_with(tmp_path, "monitoring.tf", 'retentionSize = "45GB"', "")
    assert any("no retentionSize" in p for p in checks.prometheus_storage_problems(unbounded))


@pytest.mark.parametrize("text,expected", [("50Gi", 50 * 2**30), ("45GB", 45e9), ("512Mi", 512 * 2**20)])
def test_sizes_are_read_in_their_units(text: str, expected: float) -> None:
    assert checks.size_bytes(text) == expected


# -- accelerator telemetry -----------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_accelerator_exporters_run_on_exactly_their_pools_and_are_scraped(env: str, tf, documents) -> None:
    assert checks.accelerator_telemetry_problems(tf, documents[env]) == []


def test_a_missing_exporter_is_reported(tf, documents) -> None:
    docs = [d for d in documents["prod"] if not (d["kind"] == "DaemonSet" and d["metadata"]["name"] == "dcgm-exporter")]
    assert checks.accelerator_telemetry_problems(tf, docs) == [
        "no dcgm-exporter DaemonSet: triton-gpu nodes export no accelerator metrics"]


def test_an_exporter_that_does_not_tolerate_its_pools_taint_is_reported(tf, documents) -> None:
    docs = edited(documents["prod"], "DaemonSet", "neuron-monitor",
                  lambda d: d["spec"]["template"]["spec"].update(tolerations=[]))
    assert checks.accelerator_telemetry_problems(tf, docs) == [
        "neuron-monitor never schedules on triton-inferentia nodes: untolerated taint aws.amazon.com/neuron=true:NoSchedule"]


def test_an_exporter_without_a_node_selector_spreads_to_other_nodes(tf, documents) -> None:
    docs = edited(documents["prod"], "DaemonSet", "dcgm-exporter",
                  lambda d: d["spec"]["template"]["spec"].pop("nodeSelector"))
    assert checks.accelerator_telemetry_problems(tf, docs) == [
        "dcgm-exporter would also run on system node group nodes, which have no such accelerator"]


def test_an_unscraped_exporter_is_reported(tf, documents) -> None:
    docs = [d for d in documents["prod"] if not (d["kind"] == "PodMonitor" and d["metadata"]["name"] == "neuron-monitor")]
    assert checks.accelerator_telemetry_problems(tf, docs) == [
        "neuron-monitor: no PodMonitor or ServiceMonitor scrapes its metrics port"]


def test_prometheus_must_select_monitors_without_its_release_label(tmp_path: Path, documents) -> None:
    chart_default = tf_with(tmp_path, "monitoring.tf", "podMonitorSelectorNilUsesHelmValues     = false", "")
    problems = checks.accelerator_telemetry_problems(chart_default, documents["prod"])
    assert len(problems) == 2 and all("podMonitorSelectorNilUsesHelmValues = false" in p for p in problems)


def test_only_prometheus_reaches_the_exporters_on_their_metrics_ports(documents) -> None:
    docs = [d for d in documents["prod"] if d["metadata"].get("namespace") == "accelerator-telemetry"]
    ports = {p["containerPort"] for ds in find(docs, "DaemonSet") for c in ds["spec"]["template"]["spec"]["containers"]
             for p in c["ports"]}
    allowed = {p["port"] for n in find(docs, "NetworkPolicy") for r in n["spec"].get("ingress", [])
               for p in r.get("ports", [])}
    assert allowed == ports == {9400, 8000}
    assert find(docs, "NetworkPolicy", "default-deny-ingress")[0]["spec"] == {"podSelector": {},
                                                                              "policyTypes": ["Ingress"]}
    namespace = find(documents["prod"], "Namespace", "accelerator-telemetry")[0]["metadata"]["labels"]
    assert namespace["istio-injection"] == "disabled"


def test_the_device_plugin_check_and_the_exporters_agree_on_the_pools(tf, documents) -> None:
    """The exporters follow the same NodePools as the device plugins (a renamed pool breaks both)."""
    nodes = blockers.nodepool_nodes(documents["prod"])
    assert set(checks.ACCELERATOR_EXPORTERS.values()) == {n for _, (_, n, _) in blockers.DEVICE_PLUGINS.items()} <= set(nodes)
