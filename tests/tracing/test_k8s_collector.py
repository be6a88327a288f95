"""The cluster's OpenTelemetry Collector (k8s/otel) renders, lints and validates offline like the
other manifests, and agrees with what the platform's processes are told (docs/tracing.md)."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.conftest import KUBERNETES_VERSION, REPO, deploy_tool, render_overlay, run
from tracing.settings import TracingSettings

OTEL = REPO / "k8s" / "otel"
# What the platform's pods are given (k8s/otel/kustomization.yaml says so; docs/tracing.md).
CLUSTER_ENDPOINT = "http://otel-collector.observability.svc.cluster.local:4318"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("otel") / "otel.yaml"
    path.write_text(render_overlay(OTEL))
    return path


@pytest.fixture(scope="module")
def docs(rendered):
    return [d for d in yaml.safe_load_all(rendered.read_text()) if d]


def _one(docs, kind, name=None):
    (doc,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def test_the_collector_manifests_lint_and_validate_strictly(rendered):
    p = run([deploy_tool("yamllint"), "-c", "deploy/yamllint.yaml", "--strict", OTEL])
    assert p.returncode == 0, p.stdout + p.stderr
    p = run([deploy_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, rendered])
    assert p.returncode == 0, p.stdout + p.stderr
    p = run([deploy_tool("checkov"), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes",
             "-f", rendered])
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_endpoint_the_platform_is_given_is_the_collectors_service_and_otlp_http_port(docs):
    settings = TracingSettings(CLUSTER_ENDPOINT)
    service = _one(docs, "Service", "otel-collector")
    name, namespace = settings.host.split(".")[:2]
    assert (name, namespace) == (service["metadata"]["name"], service["metadata"]["namespace"])
    assert settings.port in {p["port"] for p in service["spec"]["ports"]}
    assert CLUSTER_ENDPOINT in (OTEL / "kustomization.yaml").read_text()


def test_the_collector_pipeline_receives_otlp_on_both_ports_and_exports_what_it_defines(docs):
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("otel-collector-config")]
    config = yaml.safe_load(config_map["data"]["collector-config.yaml"])
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318") and protocols["grpc"]["endpoint"].endswith(":4317")
    pipeline = config["service"]["pipelines"]["traces"]
    for part in ("receivers", "processors", "exporters"):
        assert set(pipeline[part]) <= set(config[part]), f"{part} used but not defined"
    assert pipeline["processors"][0] == "memory_limiter", "the memory limiter must come first"
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    deployment = _one(docs, "Deployment", "otel-collector")
    mounted = deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    assert mounted == config_map["metadata"]["name"], "the Deployment mounts the generated ConfigMap"


def test_only_the_inference_namespace_reaches_the_otlp_ports(docs):
    policy = _one(docs, "NetworkPolicy", "platform-sends-spans")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "inference"}}}]
    assert {p["port"] for p in rule["ports"]} == {4317, 4318}


def test_the_gateways_envoy_and_the_control_server_are_wired_to_the_collector():
    """The control server's pods carry the OTEL_* variables naming the Collector (so it turns the
    edge's HCM tracing on over ADS), and the gateway's Envoy bootstrap has the cluster that tracer
    exports to, exactly as ``xds_server.tracing.collector_cluster`` builds it for that endpoint."""
    from xds_server.tracing import COLLECTOR_CLUSTER, collector_cluster

    rendered = [d for d in yaml.safe_load_all(render_overlay(REPO / "k8s" / "overlays" / "dev")) if d]
    (control,) = [d for d in rendered if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "xds-control"]
    (container,) = [c for c in control["spec"]["template"]["spec"]["containers"] if c["name"] == "xds-control"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = TracingSettings.from_env(env)
    assert settings is not None and settings.endpoint == CLUSTER_ENDPOINT and settings.sample_ratio == 0.01
    boot = yaml.safe_load((REPO / "k8s" / "base" / "envoy" / "bootstrap.yaml").read_text())
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == COLLECTOR_CLUSTER]
    assert cluster == collector_cluster(settings)
