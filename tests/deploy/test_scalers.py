"""The cluster's scalers carry the capacity decider's word and nothing else (issue #11, item 4).

k8s/base/autoscaling/scaledobjects.yaml states the rule in its header; these tests hold the files to
it: every KEDA query is a recording rule of alerts/scaler_queries.yaml, character for character,
and promtool runs the scenarios of alerts/tests/scaler_test.yaml on them (each query broken on
purpose must fail one); the queries read only names the control server really exports (after a
tick of the real loop with fake ports) or Triton's; the HPA is set up to pass the count through;
KEDA's bounds are the decider's (control/fleet.yaml); and Karpenter may buy the nodes that the
largest count needs.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.promql_names import metric_names_in, names_on_metrics_page
from router_lib.metric_names import TRITON_READ
from tests.deploy.conftest import OVERLAYS, REPO, find, render_overlay, run, system_tool

SCALED_OBJECTS = REPO / "k8s" / "base" / "autoscaling" / "scaledobjects.yaml"
SCALER_RULES = REPO / "alerts" / "scaler_queries.yaml"
SCALER_SCENARIOS = REPO / "alerts" / "tests" / "scaler_test.yaml"
DESIRED, QUEUE = "desired_replicas", "queue_while_control_absent"
PROMETHEUS_OWN = {"up"}  # a series Prometheus writes per target, not one any exporter serves


def promtool() -> str:
    return system_tool("promtool", "install Debian's prometheus: apt-get install --no-install-recommends prometheus")


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def trigger_queries(docs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(ScaledObject, trigger name) -> PromQL query."""
    return {(so["metadata"]["name"], t["name"]): t["metadata"]["query"]
            for so in docs if so["kind"] == "ScaledObject" for t in so["spec"]["triggers"]}


def rule_exprs(rules: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(ScaledObject, trigger name) -> expr, from records named ``scaler:<trigger name>``."""
    return {(r["labels"]["scaledobject"], r["record"].removeprefix("scaler:")): r["expr"]
            for g in rules["groups"] for r in g["rules"]}


def query_drift(queries: Mapping[tuple[str, str], str], exprs: Mapping[tuple[str, str], str]) -> list[str]:
    problems = [f"{so}/{t}: no recording rule scaler:{t} in {SCALER_RULES.name}" for so, t in queries.keys() - exprs.keys()]
    problems += [f"{so}/{t}: a recording rule for a trigger that does not exist" for so, t in exprs.keys() - queries.keys()]
    problems += [f"{so}/{t}: ScaledObject query\n  {queries[(so, t)]!r}\n  differs from the rule's expr\n  {exprs[(so, t)]!r}"
                 for so, t in queries.keys() & exprs.keys() if queries[(so, t)] != exprs[(so, t)]]
    return sorted(problems)


# -- (a) promtool ---------------------------------------------------------------------------------

def test_promtool_checks_the_scaler_rules() -> None:
    p = run([promtool(), "check", "rules", SCALER_RULES])
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_scenarios_of_the_scaler_queries_pass() -> None:
    p = run([promtool(), "test", "rules", SCALER_SCENARIOS], cwd=REPO / "alerts")
    assert p.returncode == 0, p.stdout + p.stderr


_DESIRED_FALLBACK = re.compile(r"\s*or max\(last_over_time\(router_pool_desired_replicas\{[^}]*\}\[10m\]\)\)")
_LIVE_FIRST = re.compile(r"max\(router_pool_desired_replicas\{[^}]*\}\)\s*or ")
_GATE = re.compile(r"\s*and on\(\) \(absent\(.*?\) == 0\)", re.S)
_STALL = re.compile(r"\s*or sum\(rate\(control_loop_tick_seconds_count\{[^}]*\}\[2m\]\)\) == 0")
_ABSENCE_WINDOW = re.compile(r"max_over_time\((up\{[^}]*\})\[1m\]\)")

# Each way a query could be subtly wrong -> (pattern, replacement, the check of scaler_test.yaml that
# must then fail, as promtool reports it).
MUTATIONS = {
    "no last value while the server is away": (_DESIRED_FALLBACK, "", 'expr: "scaler:desired_replicas", time: 11m30s'),
    "old series outvote a restarted server": (_LIVE_FIRST, "", 'expr: "scaler:desired_replicas", time: 4m,'),
    "queue fallback without its gate": (_GATE, "", 'expr: "scaler:queue_while_control_absent", time: 9m,'),
    "a stalled loop does not open the gate": (_STALL, "", 'expr: "scaler:queue_while_control_absent", time: 4m15s'),
    "one missed scrape opens the gate": (_ABSENCE_WINDOW, r"\1", 'expr: "scaler:queue_while_control_absent", time: 45s'),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=list(MUTATIONS))
def test_a_broken_scaler_query_fails_a_scenario(mutation: str, tmp_path: Path) -> None:
    pattern, replacement, failing_check = MUTATIONS[mutation]
    rules = yaml.safe_load(SCALER_RULES.read_text())
    changed = 0
    for rule in rules["groups"][0]["rules"]:
        broken, n = pattern.subn(replacement, rule["expr"])
        changed += n
        rule["expr"] = broken
    assert changed, f"mutation {mutation!r} no longer applies to {SCALER_RULES.name}: update it with the queries"
    (tmp_path / "tests").mkdir()
    (tmp_path / "scaler_queries.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    shutil.copy(SCALER_SCENARIOS, tmp_path / "tests" / SCALER_SCENARIOS.name)
    check = run([promtool(), "check", "rules", tmp_path / "scaler_queries.yaml"])
    assert check.returncode == 0, f"the mutation made invalid PromQL, which proves nothing: {check.stdout}"
    p = run([promtool(), "test", "rules", tmp_path / "tests" / SCALER_SCENARIOS.name], cwd=tmp_path)
    assert p.returncode != 0, f"{mutation}: every scenario still passes"
    assert failing_check in p.stdout + p.stderr, p.stdout + p.stderr


# -- (b) the rules are the ScaledObjects' queries ------------------------------------------------------

def test_every_scaler_query_is_a_tested_recording_rule() -> None:
    queries = trigger_queries(_load_all(SCALED_OBJECTS))
    assert {t for _, t in queries} == {DESIRED, QUEUE}
    assert query_drift(queries, rule_exprs(yaml.safe_load(SCALER_RULES.read_text()))) == []


def test_a_query_edited_in_one_place_only_is_caught() -> None:
    queries = trigger_queries(_load_all(SCALED_OBJECTS))
    exprs = rule_exprs(yaml.safe_load(SCALER_RULES.read_text()))
    edited = {**queries, ("triton-gpu", DESIRED): queries[("triton-gpu", DESIRED)].replace("[10m]", "[15m]")}
    assert query_drift(edited, exprs) == [query_drift(edited, exprs)[0]]
    assert "triton-gpu/desired_replicas: ScaledObject query" in query_drift(edited, exprs)[0]
    added = {**queries, ("triton-cpu", "p95_latency"): "max(router_pool_p95_ms)"}
    assert query_drift(added, exprs) == ["triton-cpu/p95_latency: no recording rule scaler:p95_latency in scaler_queries.yaml"]


# -- (c) the names the queries read exist ---------------------------------------------------------

@pytest.fixture(scope="module")
def control_server_page() -> str:
    """/metrics of the control server after one tick of the real loop (fake ports, three pools)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from control.actuator_fixed import FixedFleetActuator
    from control.loop import ControlLoop
    from control.metrics_export import ControlPlaneMetrics
    from router_lib.policy_types import PolicySettings
    from tests.control.fakes import Clock, FakeDiscovery, FakeMetrics, FakeSink, MemoryStore, replicas
    from tests.router_lib.builders import EMBED, THREE_POOLS, metrics

    registry = CollectorRegistry()
    loop = ControlLoop(
        fleet=THREE_POOLS, discovery=FakeDiscovery(replicas(cpu=2, gpu=1, inf=1)),
        metrics=FakeMetrics(metrics({("cpu", EMBED): {"request_rate_per_s": 5.0}})), sink=FakeSink(),
        store=MemoryStore(), actuator=FixedFleetActuator({p.name: p.replicas for p in THREE_POOLS.pools}),
        clock=Clock(), wall_clock=lambda: 1.7e9,
        observer=ControlPlaneMetrics(registry, THREE_POOLS, PolicySettings()),
    )
    view = loop.tick()
    assert view.decision is not None, view.last_error
    return generate_latest(registry).decode()


def unknown_names(query: str, exported: set[str]) -> set[str]:
    """Names ``query`` reads that neither the control server's page, nor Triton (TRITON_READ), nor
    Prometheus itself serves."""
    return metric_names_in(query) - exported - set(TRITON_READ) - PROMETHEUS_OWN


def test_the_scalers_read_only_names_the_control_server_or_triton_serve(control_server_page: str) -> None:
    exported = names_on_metrics_page(control_server_page)
    for (so, trigger), query in trigger_queries(_load_all(SCALED_OBJECTS)).items():
        assert metric_names_in(query), f"{so}/{trigger}: no metric name found in {query!r}"
        assert not unknown_names(query, exported), f"{so}/{trigger}: {sorted(unknown_names(query, exported))}"


def test_the_control_server_exports_a_desired_count_per_pool(control_server_page: str) -> None:
    samples = re.findall(r'^router_pool_desired_replicas\{[^}]*pool="(\w+)"[^}]*\} (\S+)$', control_server_page, re.M)
    assert {pool for pool, _ in samples} == {"cpu", "gpu", "inf"}
    assert all(float(v).is_integer() and float(v) >= 0 for _, v in samples)


def test_a_misspelt_metric_name_is_caught(control_server_page: str) -> None:
    exported = names_on_metrics_page(control_server_page)
    query = trigger_queries(_load_all(SCALED_OBJECTS))[("triton-gpu", DESIRED)]
    assert unknown_names(query.replace("router_pool_desired_replicas", "router_pool_desired_replica"), exported) \
        == {"router_pool_desired_replica"}
    queue = trigger_queries(_load_all(SCALED_OBJECTS))[("triton-gpu", QUEUE)]
    assert unknown_names(queue.replace("nv_inference_pending_request_count", "nv_inference_pending_requests"), exported) \
        == {"nv_inference_pending_requests"}


# -- the HPA passes the count through ----------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered_docs(documents: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The base and each overlay, rendered."""
    base = [d for d in yaml.safe_load_all(render_overlay(REPO / "k8s" / "base")) if d]
    return {"base": base, **documents}


ENVS = ("base", *OVERLAYS)


def pool_of(docs: list[dict], so: dict) -> str:
    deployment = find(docs, "Deployment", so["spec"]["scaleTargetRef"]["name"])[0]
    return str(deployment["spec"]["template"]["metadata"]["labels"]["inference.platform/pool"])


@pytest.mark.parametrize("env", ENVS)
def test_each_scaler_passes_the_deciders_count_through(env: str, rendered_docs: dict[str, list[dict]]) -> None:
    docs = rendered_docs[env]
    for so in find(docs, "ScaledObject"):
        name, spec = so["metadata"]["name"], so["spec"]
        triggers = {t["name"]: t for t in spec["triggers"]}
        assert set(triggers) == {DESIRED, QUEUE}, f"{name}: one policy, the decider's (and its absence rule)"
        desired, queue = triggers[DESIRED], triggers[QUEUE]
        # AverageValue with threshold 1: the HPA asks for ceil(value / 1) replicas (see the YAML header).
        assert (desired["metricType"], desired["metadata"]["threshold"]) == ("AverageValue", "1"), name
        assert desired["metadata"]["ignoreNullValues"] == "false", f"{name}: no value must hold, not read as 0"
        assert queue["metricType"] == "AverageValue" and queue["metadata"]["ignoreNullValues"] == "true", name
        assert f'pool="{pool_of(docs, so)}"' in desired["metadata"]["query"], name
        assert f'pool="{pool_of(docs, so)}"' in queue["metadata"]["query"], name
        assert "fallback" not in spec, f"{name}: a fallback would replace the decider's last count by a fixed one"
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        up, down = behavior["scaleUp"], behavior["scaleDown"]
        assert up["stabilizationWindowSeconds"] == 0, name
        assert any(p["type"] == "Pods" and p["value"] >= spec["maxReplicaCount"] - spec["minReplicaCount"]
                   for p in up["policies"]), f"{name}: the HPA must reach the decider's count in one step"
        assert down["stabilizationWindowSeconds"] <= 60, f"{name}: the decider already holds falls for 300 s"
        if spec["minReplicaCount"] == 0:  # KEDA activates (0 -> 1) when the decider wants one replica
            assert 0 <= float(desired["metadata"]["activationThreshold"]) < 1, name


def test_the_queue_fallback_uses_the_deciders_queue_rule() -> None:
    """ceil(queue / threshold) replicas is the decider's QUEUE_UP rule: one formula, not a second policy."""
    capacity_types = pytest.importorskip("router_lib.capacity_types", reason="no capacity decider in this tree")
    per_replica = capacity_types.CapacitySettings().queue_per_replica_up
    thresholds = {so["metadata"]["name"]: float(t["metadata"]["threshold"])
                  for so in _load_all(SCALED_OBJECTS) for t in so["spec"]["triggers"] if t["name"] == QUEUE}
    assert len(thresholds) == 3 and set(thresholds.values()) == {per_replica}, thresholds


# -- KEDA's bounds are the decider's ------------------------------------------------------------------

def fleet_bounds(docs: list[dict]) -> dict[str, tuple[int, int]]:
    """pool -> (min, max) of the fleet.yaml the environment's control server mounts."""
    config = find(docs, "ConfigMap")
    fleet = yaml.safe_load(next(c for c in config if c["metadata"]["name"].startswith("platform-config"))["data"]["fleet.yaml"])
    return {p["name"]: (p.get("min_replicas", p["replicas"]), p.get("max_replicas", p["replicas"])) for p in fleet["pools"]}


def bound_mismatches(docs: list[dict]) -> list[str]:
    bounds = fleet_bounds(docs)
    out = []
    for so in find(docs, "ScaledObject"):
        pool = pool_of(docs, so)
        keda = (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"])
        if pool not in bounds:
            out.append(f"{so['metadata']['name']}: pool {pool!r} is not in fleet.yaml")
        elif keda != bounds[pool]:
            out.append(f"{so['metadata']['name']}: KEDA min/max {keda} != fleet.yaml {pool} min/max {bounds[pool]}")
    return out


@pytest.mark.parametrize("env", ENVS)
def test_keda_bounds_are_the_deciders_bounds(env: str, rendered_docs: dict[str, list[dict]]) -> None:
    docs = rendered_docs[env]
    assert find(docs, "ScaledObject")
    assert bound_mismatches(docs) == []


def test_a_scaler_bound_that_differs_from_the_fleet_is_caught(rendered_docs: dict[str, list[dict]]) -> None:
    docs = [dict(d) for d in rendered_docs["base"]]
    gpu = next(i for i, d in enumerate(docs) if d["kind"] == "ScaledObject" and d["metadata"]["name"] == "triton-gpu")
    docs[gpu] = {**docs[gpu], "spec": {**docs[gpu]["spec"], "maxReplicaCount": 12}}
    assert bound_mismatches(docs) == ["triton-gpu: KEDA min/max (0, 12) != fleet.yaml gpu min/max (0, 8)"]


# -- Karpenter can buy the nodes for the largest count -------------------------------------------------

# What each instance type the NodePools may buy offers of the resources they limit (AWS EC2 instance
# type pages: c7g.xlarge 4 vCPU, c7g.2xlarge 8; g5.xlarge/2xlarge one A10G, 4/8 vCPU; inf2.xlarge one
# Inferentia2 device, 4 vCPU; inf2.8xlarge one device, 32 vCPU).
INSTANCE_CAPACITY: dict[str, dict[str, float]] = {
    "c7g.xlarge": {"cpu": 4}, "c7g.2xlarge": {"cpu": 8},
    "g5.xlarge": {"cpu": 4, "nvidia.com/gpu": 1}, "g5.2xlarge": {"cpu": 8, "nvidia.com/gpu": 1},
    "inf2.xlarge": {"cpu": 4, "aws.amazon.com/neuron": 1}, "inf2.8xlarge": {"cpu": 32, "aws.amazon.com/neuron": 1},
}
NODE_RESERVED_CPU = 0.5  # kubelet/system reserve and the DaemonSets (CNI, kube-proxy, CSI, exporters)
SIDECAR_CPU = 0.1  # Istio's proxy request (namespace istio-injection: enabled), default 100m


def quantity(text: str | int) -> float:
    s = str(text)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def node_capacity_needed(resource: str, request: float, replicas: int, types: list[str]) -> float:
    """The most of ``resource`` the nodes for ``replicas`` pods can add up to, whichever allowed type
    Karpenter buys, plus one more node of the largest type (Karpenter launches a replacement before it
    drains a drifted or consolidated node)."""
    worst = 0.0
    for t in types:
        capacity = INSTANCE_CAPACITY[t]
        room = capacity["cpu"] - NODE_RESERVED_CPU if resource == "cpu" else capacity[resource]
        per_node = math.floor(room / request)
        assert per_node >= 1, f"a pod requesting {request} {resource} fits no {t}"
        worst = max(worst, math.ceil(replicas / per_node) * capacity[resource])
    return worst + max(INSTANCE_CAPACITY[t][resource] for t in types)


def nodepool_shortfalls(docs: list[dict]) -> list[str]:
    out = []
    for so in find(docs, "ScaledObject"):
        deployment = find(docs, "Deployment", so["spec"]["scaleTargetRef"]["name"])[0]
        pod = deployment["spec"]["template"]["spec"]
        nodepool = find(docs, "NodePool", pod["nodeSelector"]["karpenter.sh/nodepool"])[0]
        reqs = {r["key"]: r["values"] for r in nodepool["spec"]["template"]["spec"]["requirements"]}
        types = reqs["node.kubernetes.io/instance-type"]
        surge = int(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"])
        replicas = so["spec"]["maxReplicaCount"] + surge
        for resource, limit in nodepool["spec"]["limits"].items():
            request = sum(quantity(c["resources"]["requests"].get(resource, 0)) for c in pod["containers"])
            request += SIDECAR_CPU if resource == "cpu" else 0.0
            need = node_capacity_needed(resource, request, replicas, types)
            if quantity(limit) < need:
                out.append(f"NodePool {nodepool['metadata']['name']}: limit {resource}={limit} < {need:g} for "
                           f"{replicas} replicas of {deployment['metadata']['name']} (max {so['spec']['maxReplicaCount']} + surge {surge})")
    return out


@pytest.mark.parametrize("env", ENVS)
def test_karpenter_limits_cover_the_largest_count(env: str, rendered_docs: dict[str, list[dict]]) -> None:
    docs = rendered_docs[env]
    assert all(find(docs, "NodePool", name) for name in ("triton-cpu", "triton-gpu", "triton-inferentia"))
    assert nodepool_shortfalls(docs) == []


def test_a_nodepool_limit_below_the_largest_count_is_caught(rendered_docs: dict[str, list[dict]]) -> None:
    docs = [dict(d) for d in rendered_docs["prod"]]
    i = next(i for i, d in enumerate(docs) if d["kind"] == "NodePool" and d["metadata"]["name"] == "triton-gpu")
    docs[i] = {**docs[i], "spec": {**docs[i]["spec"], "limits": {"nvidia.com/gpu": "8"}}}
    assert nodepool_shortfalls(docs) == [
        "NodePool triton-gpu: limit nvidia.com/gpu=8 < 10 for 9 replicas of triton-gpu (max 8 + surge 1)"]
