"""Offline checks for the blockers that kept a first `make deploy-all` from serving (issue 13).

Each check is a pure function of what the repository says: the Terraform root module parsed from
its HCL (``load_terraform``; the AWS provider cannot be fetched here, so neither ``terraform
validate`` nor ``plan`` can run on it), the rendered kustomize overlays, and the documented
defaults of the pinned add-on charts (``deploy/chart_defaults.yaml``).  Each returns the problems
it finds, worded for the person who has to fix them; ``[]`` means none.
tests/deploy/test_eks_blockers.py runs every check on the repository and on a copy with the
blocker put back, so a check that cannot fail would show.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY_PYTHON = REPO / ".venv-deploy" / "bin" / "python"
CHART_DEFAULTS = Path(__file__).with_name("chart_defaults.yaml")
# The first amazon-eks-ami release with AL2023 NVIDIA and Neuron variants (FINDINGS: EKS review).
FIRST_AL2023_ACCELERATED_RELEASE = "v20240924"
ISTIO_CONTROL_PLANE_PORTS = {15017: "sidecar-injection webhook", 15012: "xDS and CA"}

_HCL_TO_JSON = "import hcl2, json, sys; print(json.dumps({f: hcl2.load(open(f)) for f in sys.argv[1:]}))"

Doc = Mapping[str, Any]


# -- reading ---------------------------------------------------------------------------------------

def load_terraform(directory: Path, python: Path = DEPLOY_PYTHON) -> dict[str, list[Any]]:
    """Every top-level block of the ``*.tf`` files in ``directory``, merged by kind (``module``,
    ``resource``, ``data``, ``locals``, ``variable``), parsed by python-hcl2 (checkov's parser)."""
    files = sorted(str(p) for p in directory.glob("*.tf"))
    p = subprocess.run([str(python), "-c", _HCL_TO_JSON, *files], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise ValueError(f"cannot parse the HCL in {directory}: {p.stderr[-2000:]}")
    merged: dict[str, list[Any]] = {}
    for parsed in json.loads(p.stdout).values():
        for kind, blocks in parsed.items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def _one(value: Any) -> Any:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _named(tf: Mapping[str, list[Any]], kind: str, type_: str | None = None) -> dict[str, Any]:
    """``module``/``variable`` blocks by name, or ``resource``/``data`` blocks of ``type_`` by name."""
    out: dict[str, Any] = {}
    for block in tf.get(kind, []):
        if type_ is None:
            out.update(block)
        else:
            out.update(block.get(type_, {}))
    return out


def _locals(tf: Mapping[str, list[Any]]) -> dict[str, str]:
    return {k: str(_one(v)) for block in tf.get("locals", []) for k, v in block.items() if not k.startswith("__")}


def _expanded(text: str, local_values: Mapping[str, str], depth: int = 0) -> str:
    """``${local.x}`` replaced by the local's own expression (so a check sees what it refers to)."""
    if depth > 5:
        return text
    return re.sub(r"local\.([A-Za-z0-9_]+)",
                  lambda m: _expanded(local_values.get(m.group(1), m.group(0)), local_values, depth + 1), text)


def _helm_values(release: Mapping[str, Any]) -> dict[str, Any]:
    """A helm_release's ``values = [yamlencode({...})]`` as data (literals only, which ours are)."""
    text = _one(release.get("values"))
    if not text:
        return {}
    m = re.fullmatch(r"\$\{yamlencode\((.*)\)\}", str(text), flags=re.S)
    if not m:
        raise ValueError(f"helm values are not a literal yamlencode(...): {text[:120]}")
    return dict(ast.literal_eval(m.group(1)))


def find(docs: Sequence[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


# -- blocker 3: the API endpoint ------------------------------------------------------------------

def endpoint_access_problems(tf: Mapping[str, list[Any]]) -> list[str]:
    eks = _named(tf, "module").get("eks", {})
    problems = []
    if _one(eks.get("cluster_endpoint_public_access")) is not True:
        problems.append("EKS API endpoint is private-only, but terraform's Helm releases and deploy/cli.py's "
                        "kubectl run from outside the VPC: set cluster_endpoint_public_access = true")
    cidrs = list(_strings(eks.get("cluster_endpoint_public_access_cidrs")))
    if not cidrs:
        problems.append("cluster_endpoint_public_access_cidrs is not set: the public endpoint would be open to 0.0.0.0/0")
    elif "0.0.0.0/0" in cidrs:
        problems.append("cluster_endpoint_public_access_cidrs contains 0.0.0.0/0")
    if _one(eks.get("cluster_endpoint_private_access")) is not True:
        problems.append("cluster_endpoint_private_access must stay true (nodes reach the API inside the VPC)")
    return problems


# -- blocker 4: service-linked roles named in key policies ------------------------------------------

def service_linked_role_problems(tf: Mapping[str, list[Any]], *, dev_uses_spot: bool) -> list[str]:
    slrs = {str(_one(body.get("aws_service_name"))): name
            for name, body in _named(tf, "resource", "aws_iam_service_linked_role").items()}
    local_values = _locals(tf)
    problems = []
    for doc_name, doc in _named(tf, "data", "aws_iam_policy_document").items():
        for text in _strings(doc.get("statement")):
            expanded = _expanded(text, local_values)
            for service in re.findall(r"aws-service-role/([a-z0-9.-]+)/", expanded):
                name = slrs.get(service)
                if name is None:
                    problems.append(f"policy {doc_name} names the {service} service-linked role, which a fresh "
                                    f"account does not have: create aws_iam_service_linked_role for {service}")
                elif f"aws_iam_service_linked_role.{name}" not in expanded:
                    problems.append(f"policy {doc_name} names the {service} service-linked role without referring "
                                    f"to aws_iam_service_linked_role.{name}: the key may be written before it exists")
    if dev_uses_spot and "spot.amazonaws.com" not in slrs:
        problems.append("dev runs Spot capacity but nothing creates the EC2 Spot service-linked role (spot.amazonaws.com)")
    return problems


# -- blocker 5: Istio's control-plane ports, and network policy enforcement ----------------------

def istio_port_problems(tf: Mapping[str, list[Any]]) -> list[str]:
    rules = _one(_named(tf, "module").get("eks", {}).get("node_security_group_additional_rules")) or {}
    open_from_control_plane = set()
    for rule in rules.values():
        if rule.get("type") == "ingress" and rule.get("protocol") in ("tcp", "-1") \
                and rule.get("source_cluster_security_group") is True:
            open_from_control_plane |= set(range(int(rule["from_port"]), int(rule["to_port"]) + 1))
    return [f"node security group: no ingress from the cluster security group on {port} (istiod {what}); "
            "sidecar injection fails closed and no pod in the namespace is created"
            for port, what in sorted(ISTIO_CONTROL_PLANE_PORTS.items()) if port not in open_from_control_plane]


def network_policy_problems(tf: Mapping[str, list[Any]], docs: Sequence[Doc]) -> list[str]:
    if not find(docs, "NetworkPolicy"):
        return []
    addons = _one(_named(tf, "module").get("eks", {}).get("cluster_addons")) or {}
    config = str(_one((addons.get("vpc-cni") or {}).get("configuration_values")) or "")
    if not re.search(r"['\"]enableNetworkPolicy['\"]\s*[:=]\s*['\"]true['\"]", config):
        return ["the manifests carry NetworkPolicies but the VPC CNI does not enforce them: "
                "set vpc-cni configuration_values enableNetworkPolicy = \"true\""]
    return []


# -- blocker 6: the AMI pin ------------------------------------------------------------------------

def ami_pin_problems(docs: Sequence[Doc], first_release: str = FIRST_AL2023_ACCELERATED_RELEASE) -> list[str]:
    problems = []
    for nodeclass in find(docs, "EC2NodeClass"):
        name = nodeclass["metadata"]["name"]
        for term in nodeclass["spec"].get("amiSelectorTerms", []):
            alias = term.get("alias")
            if alias is None:
                continue
            family, _, version = alias.partition("@")
            if family == "al2023" and version != "latest" and version < first_release:
                problems.append(f"EC2NodeClass {name}: {alias} predates {first_release}, the first AL2023 release "
                                "with NVIDIA and Neuron variants: Karpenter finds no AMI for g5/inf2")
    return problems


# -- blocker 7: model delivery -------------------------------------------------------------------

def model_delivery_problems(docs: Sequence[Doc]) -> list[str]:
    problems = []
    irsa = {sa["metadata"]["name"] for sa in find(docs, "ServiceAccount")
            if "eks.amazonaws.com/role-arn" in (sa["metadata"].get("annotations") or {})}
    for deployment in find(docs, "Deployment"):
        pod = deployment["spec"]["template"]
        if pod["metadata"].get("labels", {}).get("app.kubernetes.io/name") != "triton":
            continue
        name = deployment["metadata"]["name"]
        spec = pod["spec"]
        if spec.get("initContainers"):
            problems.append(f"{name}: init containers run before the Istio sidecar and have no network under "
                            "istio-cni; Triton reads its S3 repository itself")
        (triton,) = [c for c in spec["containers"] if c["name"] == "tritonserver"]
        repo = [a.split("=", 1)[1] for a in triton.get("args", []) if a.startswith("--model-repository=")]
        if not repo or not (repo[0].startswith("s3://") or repo[0].startswith("$(MODEL_REPOSITORY_S3)")):
            problems.append(f"{name}: --model-repository {repo} is not the S3 repository")
        env = {e["name"] for e in triton.get("env", [])}
        if not {"AWS_DEFAULT_REGION", "AWS_REGION"} & env:
            problems.append(f"{name}: no AWS_DEFAULT_REGION for Triton's S3 client")
        if spec.get("serviceAccountName") not in irsa:
            problems.append(f"{name}: service account {spec.get('serviceAccountName')} has no IRSA role to read S3")
        proxy = json.loads((pod["metadata"].get("annotations") or {}).get("proxy.istio.io/config", "{}"))
        if proxy.get("holdApplicationUntilProxyStarts") is not True:
            problems.append(f"{name}: Triton may start fetching its models before the sidecar is up "
                            "(proxy.istio.io/config holdApplicationUntilProxyStarts)")
    return problems


# -- high items: the autoscaler owns replicas; the NLB waits for new Envoys ---------------------------

def autoscaler_conflict_problems(docs: Sequence[Doc]) -> list[str]:
    scaled = {so["spec"]["scaleTargetRef"]["name"] for so in find(docs, "ScaledObject")}
    return [f"Deployment {d['metadata']['name']} sets spec.replicas while KEDA's HPA scales it: every "
            "`make deploy-all` (server-side apply) would reset it and conflict with the autoscaler"
            for d in find(docs, "Deployment") if d["metadata"]["name"] in scaled and "replicas" in d["spec"]]


def nlb_readiness_gate_problems(docs: Sequence[Doc]) -> list[str]:
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in find(docs, "Namespace")}
    problems = []
    for service in find(docs, "Service"):
        annotations = service["metadata"].get("annotations") or {}
        # IP targets: the NLB sends to pod IPs, which is where readiness gates matter.
        if service["spec"].get("type") != "LoadBalancer" or \
                annotations.get("service.beta.kubernetes.io/aws-load-balancer-nlb-target-type") != "ip":
            continue
        namespace = service["metadata"].get("namespace", "")
        if namespaces.get(namespace, {}).get("elbv2.k8s.aws/pod-readiness-gate-inject") != "enabled":
            problems.append(f"Service {service['metadata']['name']} is behind an NLB but namespace {namespace} has no "
                            "pod readiness gate: a rollout can remove old Envoys before the NLB sends to new ones")
    return problems


def grafana_password_problems(tf: Mapping[str, list[Any]]) -> list[str]:
    release = _named(tf, "resource", "helm_release").get("kube_prometheus_stack", {})
    values = _helm_values(release).get("grafana", {})
    sensitive = {_one(s.get("name")) for s in release.get("set_sensitive", [])}
    if values.get("adminPassword") or values.get("admin", {}).get("existingSecret") or \
            "grafana.adminPassword" in sensitive:
        return []
    return ["kube-prometheus-stack: Grafana keeps the chart's default admin password (prom-operator)"]


# -- blocker 9: device plugins schedule on the accelerator nodes -----------------------------------

def _matches_expression(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    value, op = labels.get(expression["key"]), expression["operator"]
    if op == "In":
        return value in expression["values"]
    if op == "NotIn":
        return value not in expression["values"]
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    raise ValueError(f"operator {op} not simulated")


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", taint["effect"]):
            continue
        if t.get("operator", "Equal") == "Exists" and t.get("key") in (None, taint["key"]):
            return True
        if t.get("key") == taint["key"] and str(t.get("value")) == str(taint.get("value")):
            return True
    return False


def daemonset_schedules(values: Mapping[str, Any], defaults: Mapping[str, Any], node_labels: Mapping[str, str],
                        node_taints: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a chart's DaemonSet with ``values`` over its ``defaults`` would not run on the node; [] = it does."""
    why = []
    node_selector = values.get("nodeSelector", defaults.get("nodeSelector") or {})
    for key, value in node_selector.items():
        if node_labels.get(key) != value:
            why.append(f"nodeSelector {key}={value}")
    affinity = values.get("affinity", defaults.get("affinity")) or {}
    terms = (affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {})
             .get("nodeSelectorTerms", []))
    if terms and not any(all(_matches_expression(node_labels, e) for e in term.get("matchExpressions", []))
                         for term in terms):
        why.append("required node affinity: " + " OR ".join(
            " AND ".join(f"{e['key']} {e['operator']} {e.get('values', '')}" for e in t["matchExpressions"])
            for t in terms))
    tolerations = values.get("tolerations", defaults.get("tolerations") or [])
    why += [f"untolerated taint {t['key']}={t.get('value')}:{t['effect']}" for t in node_taints
            if not _tolerates(tolerations, t)]
    return why


def nodepool_nodes(docs: Sequence[Doc]) -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
    """Each NodePool's node as the scheduler sees it: its template labels, the labels Karpenter
    adds (nodepool, each allowed instance type in turn -> the first), and its taints."""
    nodes = {}
    for pool in find(docs, "NodePool"):
        template = pool["spec"]["template"]
        labels = {**(template.get("metadata", {}).get("labels") or {}),
                  "karpenter.sh/nodepool": pool["metadata"]["name"]}
        for requirement in template["spec"].get("requirements", []):
            if requirement["operator"] == "In":
                labels[requirement["key"]] = requirement["values"][0]
        nodes[pool["metadata"]["name"]] = (labels, list(template["spec"].get("taints", [])))
    return nodes


DEVICE_PLUGINS = {"nvidia_device_plugin": ("nvidia-device-plugin", "triton-gpu", []),
                  "neuron_device_plugin": ("neuron-helm-chart", "triton-inferentia", ["devicePlugin"])}


def device_plugin_problems(tf: Mapping[str, list[Any]], docs: Sequence[Doc],
                           chart_defaults: Mapping[str, Any] | None = None) -> list[str]:
    chart_defaults = chart_defaults or yaml.safe_load(CHART_DEFAULTS.read_text())
    releases = _named(tf, "resource", "helm_release")
    nodes = nodepool_nodes(docs)
    problems = []
    for release, (chart, nodepool, path) in DEVICE_PLUGINS.items():
        body = releases.get(release)
        if body is None:
            problems.append(f"helm_release {release} is missing: {nodepool} nodes would offer no accelerator")
            continue
        pinned, documented = str(_one(body.get("version"))), chart_defaults[chart]
        if pinned != str(documented["version"]):
            problems.append(f"helm_release {release} pins {chart} {pinned}, but deploy/chart_defaults.yaml "
                            f"documents {documented['version']}: re-read the chart's defaults")
        values: Any = _helm_values(body)
        for key in path:
            values = values.get(key, {})
        labels, taints = nodes[nodepool]
        for why in daemonset_schedules(values, documented, labels, taints):
            problems.append(f"{chart} never schedules on {nodepool} nodes: {why}")
    return problems


# -- blockers 1-2: the control server as the cluster runs it ---------------------------------------

def control_server_problems(docs: Sequence[Doc]) -> list[str]:
    (statefulset,) = find(docs, "StatefulSet", "xds-control")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)
    problems = []
    if flags.get("discovery") != "kubernetes":
        problems.append("control server: replicas must come from EndpointSlices (--discovery=kubernetes); "
                        "nothing writes a runtime file in the cluster")
    if flags.get("listen-address") != "0.0.0.0":
        problems.append("control server: --listen-address must be 0.0.0.0 (Envoy dials the pod IP for ADS)")
    if flags.get("envoy-listen-address") != "0.0.0.0":
        problems.append("control server: --envoy-listen-address must be 0.0.0.0 (the NLB reaches Envoy's pod IP "
                        "on 8000/8001; loopback listeners refuse it while the health check passes)")
    probes = {k: container.get(k, {}).get("httpGet", {}).get("path") for k in ("readinessProbe", "livenessProbe")}
    if "/healthz" in probes.values():
        problems.append("control server: /healthz is 503 while no pool serves; as a probe it removes the only ADS "
                        "server exactly then (use /readyz and /livez)")
    rules = [r for role in find(docs, "Role", "xds-control") for r in role["rules"]]
    if not any("endpointslices" in r["resources"] and {"list", "watch"} <= set(r["verbs"]) for r in rules):
        problems.append("control server: its Role cannot list and watch endpointslices")
    return problems + control_plane_ha_problems(statefulset, flags, rules)


def fleet_signal_problems(docs: Sequence[Doc]) -> list[str]:
    """The deciders see every Envoy and Triton: through Prometheus, with Triton's job the one queried."""
    (statefulset,) = find(docs, "StatefulSet", "xds-control")
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if flags.get("metrics-source") != "prometheus" or not flags.get("prometheus-url"):
        return ["control server: reads Envoy's stats from one URL, i.e. whichever Envoy the Service picks; "
                "use --metrics-source=prometheus (every Envoy and Triton)"]
    job = flags.get("prometheus-triton-job", "triton")
    problems = []
    for monitor in find(docs, "ServiceMonitor", "triton"):
        label = monitor["spec"].get("jobLabel")
        services = [s for s in find(docs, "Service") if s["metadata"]["name"].startswith("triton-")]
        jobs = {(s["metadata"].get("labels") or {}).get(label) if label else s["metadata"]["name"] for s in services}
        if jobs != {job}:
            problems.append(f"ServiceMonitor triton gives Triton's targets job {sorted(map(str, jobs))}, "
                            f"but the control server queries job={job!r}")
    return problems


def control_plane_ha_problems(statefulset: Doc, flags: Mapping[str, str], rules: Sequence[Doc]) -> list[str]:
    """Two or more control servers, one Lease, one shared record the Role lets them write."""
    problems = []
    if int(statefulset["spec"].get("replicas", 1)) < 2:
        problems.append("control plane: one replica; losing its node or zone stops every decision until it is back")
    if "k8s-lease" not in flags:
        problems.append("control plane: no --k8s-lease: several replicas would all decide")
    if "state-configmap" not in flags or "state" in flags:
        problems.append("control plane: the record must be shared (--state-configmap), not a per-pod file")
    if statefulset["spec"].get("volumeClaimTemplates"):
        problems.append("control plane: a per-pod volume for state is a record nobody else reads")

    def may(resource: str, verb: str, name: str | None) -> bool:
        return any(resource in r["resources"] and verb in r["verbs"]
                   and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)
    for resource, name in (("leases", flags.get("k8s-lease")), ("configmaps", flags.get("state-configmap"))):
        missing = [v for v in ("get", "create", "update") if not may(resource, v, name)]
        if missing:
            problems.append(f"control plane: its Role cannot {'/'.join(missing)} {resource} {name}")
    return problems


# -- high item: Envoy -> Triton under STRICT mTLS ---------------------------------------------------

ISTIO_HTTP_APP_PROTOCOLS = ("http", "http2", "grpc", "kubernetes.io/h2c")


def _strict_on(docs: Sequence[Doc], labels: Mapping[str, str], port: int) -> bool:
    """Whether Istio's PeerAuthentications make ``port`` of pods with ``labels`` STRICT (workload
    policy over namespace default; port-level over workload-level)."""
    mode = None
    for pa in find(docs, "PeerAuthentication"):
        spec = pa["spec"]
        selector = (spec.get("selector") or {}).get("matchLabels")
        if selector is None and mode is None:
            mode = (spec.get("mtls") or {}).get("mode")
    for pa in find(docs, "PeerAuthentication"):
        spec = pa["spec"]
        selector = (spec.get("selector") or {}).get("matchLabels")
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            mode = ((spec.get("portLevelMtls") or {}).get(str(port)) or spec.get("mtls") or {}).get("mode", mode)
    return mode == "STRICT"


def mesh_authority_problems(docs: Sequence[Doc], assignments: Sequence[Mapping[str, Any]],
                            route_configs: Sequence[Mapping[str, Any]],
                            cluster_domain: str = "cluster.local") -> list[str]:
    """Envoy's requests to Triton pods reach them over Istio mTLS.

    Envoy (in the mesh) sends to pod IPs of headless Services.  For an HTTP port, Istio's sidecar
    finds the mesh route of such a pod by the request's Host/:authority, which must name the
    Service (istio.io, common problems: "503 error while accessing headless services"); any other
    Host (the client's, the NLB's) goes out through the passthrough cluster in plaintext, and
    STRICT mTLS on Triton's side refuses it.  So: every endpoint of a Triton pod carries its
    Service's host name (EDS ``hostname``) and every forwarding route rewrites to it
    (``auto_host_rewrite``).  ``assignments``/``route_configs``: the cluster-mode snapshot's EDS
    and RDS resources as dicts."""
    services = {}
    for s in find(docs, "Service"):
        if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "triton":
            host = f"{s['metadata']['name']}.{s['metadata'].get('namespace', 'default')}.svc.{cluster_domain}"
            services[host] = s
    pods = [d["spec"]["template"]["metadata"].get("labels") or {} for d in find(docs, "Deployment")
            if (d["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "triton"]
    problems: list[str] = []
    strict_ports = {p["port"] for s in services.values() for p in s["spec"]["ports"]
                    if any(_strict_on(docs, labels, int(p["port"])) for labels in pods)}
    if not strict_ports:
        return []
    for assignment in assignments:
        for locality in assignment.get("endpoints", []):
            for lb in locality.get("lb_endpoints", []):
                endpoint = lb["endpoint"]
                port = int(endpoint["address"]["socket_address"]["port_value"])
                if port not in strict_ports:
                    continue
                host = endpoint.get("hostname", "")
                where = f"{assignment['cluster_name']} -> {endpoint['address']['socket_address']['address']}:{port}"
                service = services.get(host)
                if service is None:
                    problems.append(f"{where}: EDS hostname {host!r} names no Triton Service, so Envoy keeps the "
                                    "client's Host and Istio's sidecar sends the request in plaintext, which STRICT "
                                    "mTLS refuses: the endpoint must carry <service>.<namespace>.svc." + cluster_domain)
                    continue
                if service["spec"].get("clusterIP") != "None":
                    problems.append(f"{where}: Service {host} has a cluster IP: Istio would load-balance on it "
                                    "instead of the pod Envoy picked (headless keeps the original destination)")
                (svc_port,) = [p for p in service["spec"]["ports"] if int(p["port"]) == port] or [{}]
                if svc_port.get("appProtocol") not in ISTIO_HTTP_APP_PROTOCOLS and \
                        not str(svc_port.get("name", "")).startswith(("http", "grpc")):
                    problems.append(f"{where}: port {port} of {host} is not declared HTTP to Istio "
                                    "(appProtocol); it would not route by Host")
    for config in route_configs:
        for vhost in config.get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                action = route.get("route")
                if action and not action.get("auto_host_rewrite"):
                    problems.append(f"route {config['name']}/{route.get('name')}: Host is not rewritten to the "
                                    "endpoint's Service (auto_host_rewrite), so Istio passes it through in "
                                    "plaintext and STRICT mTLS refuses it")
    return sorted(set(problems), key=problems.index)
