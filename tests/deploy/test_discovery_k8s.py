"""Kubernetes replica discovery: the pure mapping from EndpointSlices to replicas, then the real
``kubernetes`` client listing and watching a local API server that speaks the list/watch protocol
(``fake_apiserver.py``): churn, terminating pods, 410 resync, timeouts, an API server away."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from control.discovery_k8s import EndpointSliceDiscovery, SliceSelection, discovery_api, replicas_from_slices
from control.ports import DiscoveryError
from fleet.supervisor import wait_until
from tests.deploy.fake_apiserver import FakeApiServer, endpoint_slice, pod_endpoint

SELECTION = SliceSelection()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    wait_until(condition, timeout_s, what, poll_s=0.02)  # TimeoutError naming what it waited for


# -- pure mapping --------------------------------------------------------------------------------

@pytest.mark.parametrize("conditions,ready,terminating,routed", [
    ({"ready": True, "serving": True, "terminating": False}, True, False, True),
    ({}, True, False, True),  # all nil: ready (API reference: nil ready/serving mean true)
    ({"ready": False, "serving": False, "terminating": False}, False, False, False),  # starting
    ({"ready": False, "serving": True, "terminating": True}, True, True, False),  # preStop: drain
    ({"ready": False, "serving": False, "terminating": True}, False, True, False),
    ({"ready": False}, False, False, False),  # nil serving follows ready
], ids=["ready", "nil-conditions-mean-ready", "starting", "terminating-still-serving-is-drained",
        "terminating-not-serving", "nil-serving-follows-ready"])
def test_endpoint_conditions_map_to_replica_states_as_the_api_reference_defines(conditions, ready, terminating, routed):
    endpoint = {"addresses": ["10.0.1.5"], "conditions": conditions, "targetRef": {"kind": "Pod", "name": "p"}}
    replica_set, problems = replicas_from_slices([endpoint_slice("s", pool="cpu", endpoints=[endpoint])], SELECTION)
    (replica,) = replica_set.by_pool["cpu"]
    assert (replica.ready, replica.terminating, replica.serving) == (ready, terminating, routed)
    assert problems == []


def test_a_replica_has_the_pod_ip_the_named_ports_and_its_own_metrics_url():
    slices = [endpoint_slice("triton-gpu-x", pool="gpu", ports={"grpc": 9001, "http": 9000, "http-metrics": 9002},
                             endpoints=[pod_endpoint("10.0.2.7", "triton-gpu-1", zone="us-east-1b")])]
    replica_set, _ = replicas_from_slices(slices, SELECTION)
    (replica,) = replica_set.by_pool["gpu"]
    assert (replica.host, replica.http_port, replica.grpc_port) == ("10.0.2.7", 9000, 9001)
    assert replica.metrics_url == "http://10.0.2.7:9002/metrics"
    assert replica.detail["pod"] == "triton-gpu-1" and replica.detail["zone"] == "us-east-1b"
    assert replica.detail["service"] == "triton-gpu"


def test_an_ipv6_metrics_url_brackets_the_address():
    slice_ = endpoint_slice("s6", pool="cpu", endpoints=[pod_endpoint("fd00::5", "p")])
    slice_["addressType"] = "IPv6"
    replica_set, _ = replicas_from_slices([slice_], SELECTION)
    assert replica_set.by_pool["cpu"][0].metrics_url == "http://[fd00::5]:8002/metrics"


def test_an_address_in_two_slices_of_a_pool_counts_once_and_the_ready_copy_wins():
    stale = endpoint_slice("a", pool="cpu", endpoints=[pod_endpoint("10.0.1.5", "p", ready=False)])
    fresh = endpoint_slice("b", pool="cpu", endpoints=[pod_endpoint("10.0.1.5", "p", ready=True)])
    for order in ([stale, fresh], [fresh, stale]):
        replica_set, _ = replicas_from_slices(order, SELECTION)
        assert len(replica_set.by_pool["cpu"]) == 1 and replica_set.by_pool["cpu"][0].serving


def test_slices_that_cannot_be_pools_are_left_out_and_say_why():
    unlabelled = endpoint_slice("nolabel", pool="cpu", endpoints=[pod_endpoint("10.0.1.5", "p")])
    del unlabelled["metadata"]["labels"]["inference.platform/pool"]
    fqdn = endpoint_slice("fqdn", pool="cpu", endpoints=[pod_endpoint("10.0.1.6", "q")])
    fqdn["addressType"] = "FQDN"
    no_grpc = endpoint_slice("nogrpc", pool="gpu", ports={"http": 8000, "http-metrics": 8002},
                             endpoints=[pod_endpoint("10.0.1.7", "r")])
    replica_set, problems = replicas_from_slices([unlabelled, fqdn, no_grpc], SELECTION)
    assert replica_set.by_pool == {}
    assert any("nolabel" in p and "inference.platform/pool" in p for p in problems)
    assert any("fqdn" in p and "FQDN" in p for p in problems)
    assert any("nogrpc" in p and "grpc" in p for p in problems)


def test_a_slice_of_a_service_with_no_pods_yet_is_a_pool_with_no_replicas_not_a_problem():
    empty = endpoint_slice("empty", pool="inf2", endpoints=[])
    replica_set, problems = replicas_from_slices([empty], SELECTION)
    assert replica_set.ready_count() == {"inf2": 0} and problems == []


def test_a_bad_selection_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="pool_label"):
        SliceSelection(pool_label="")
    with pytest.raises(ValueError, match="metrics_path"):
        SliceSelection(metrics_path="metrics")


# -- the real client against the list/watch protocol -------------------------------------------

@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


def start_discovery(server: FakeApiServer, **kwargs) -> EndpointSliceDiscovery:
    discovery = EndpointSliceDiscovery(discovery_api(host=server.url), SELECTION, max_backoff_s=0.2, **kwargs)
    discovery.start()
    return discovery


def cpu_slice(*endpoints):
    return endpoint_slice("triton-cpu-abcde", pool="cpu", endpoints=list(endpoints))


def serving_hosts(discovery: EndpointSliceDiscovery, pool: str) -> set[str]:
    try:
        return {r.host for r in discovery.read().serving(pool)}
    except DiscoveryError:
        return set()


def test_read_refuses_until_the_first_list_then_follows_the_watch(apiserver):
    apiserver.fail_next_list = True
    apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1")))
    discovery = start_discovery(apiserver)
    try:
        with pytest.raises(DiscoveryError):
            discovery.read()  # a 500 on the first list: nothing is known, and it says so
        assert discovery.wait_synced(10)
        assert serving_hosts(discovery, "cpu") == {"10.0.1.1"}
        # churn: a new pod starts (not ready), becomes ready, an old one terminates, a pool appears
        apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1"), pod_endpoint("10.0.1.2", "cpu-2", ready=False)))
        wait_for(lambda: discovery.read().starting_count() == {"cpu": 1}, what="a starting replica")
        assert serving_hosts(discovery, "cpu") == {"10.0.1.1"}
        apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1", ready=False, serving=True, terminating=True),
                                  pod_endpoint("10.0.1.2", "cpu-2")))
        apiserver.apply(endpoint_slice("triton-gpu-fghij", pool="gpu", endpoints=[pod_endpoint("10.0.2.1", "gpu-1")]))
        wait_for(lambda: serving_hosts(discovery, "gpu") == {"10.0.2.1"}, what="the gpu pool")
        assert serving_hosts(discovery, "cpu") == {"10.0.1.2"}
        draining = [r for r in discovery.read().by_pool["cpu"] if r.terminating]
        assert [r.host for r in draining] == ["10.0.1.1"]
        apiserver.delete("inference", "triton-gpu-fghij")
        wait_for(lambda: "gpu" not in discovery.read().by_pool, what="the deleted slice to go")
        assert discovery.relists == 1, "a live watch needs no relist"
    finally:
        discovery.stop()


def test_other_namespaces_and_labels_are_not_watched(apiserver):
    other_ns = endpoint_slice("elsewhere", pool="cpu", namespace="default", endpoints=[pod_endpoint("10.9.0.1", "x")])
    not_triton = endpoint_slice("envoy", pool="cpu", endpoints=[pod_endpoint("10.9.0.2", "y")])
    not_triton["metadata"]["labels"]["app.kubernetes.io/name"] = "envoy-gateway"
    apiserver.apply(other_ns)
    apiserver.apply(not_triton)
    apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1")))
    discovery = start_discovery(apiserver)
    try:
        assert discovery.wait_synced(10)
        assert serving_hosts(discovery, "cpu") == {"10.0.1.1"}
        assert all("labelSelector=app.kubernetes.io/name%3Dtriton" in r for r in apiserver.requests)
    finally:
        discovery.stop()


def test_an_expired_resource_version_relists_and_drops_what_was_deleted_meanwhile(apiserver):
    apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1")))
    apiserver.apply(endpoint_slice("triton-gpu-fghij", pool="gpu", endpoints=[pod_endpoint("10.0.2.1", "gpu-1")]))
    discovery = start_discovery(apiserver)
    try:
        assert discovery.wait_synced(10)
        wait_for(lambda: any("watch=true" in r for r in apiserver.requests), what="the watch to open")
        apiserver.hold_events = True  # the watch sees nothing from here ...
        apiserver.delete("inference", "triton-gpu-fghij")
        apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1"), pod_endpoint("10.0.1.3", "cpu-3")))
        apiserver.compact()  # ... and the history it missed is gone: its resourceVersion is too old
        apiserver.hold_events = False
        apiserver.break_watches()
        wait_for(lambda: discovery.resyncs_after_gone >= 1, what="a 410 resync")
        wait_for(lambda: serving_hosts(discovery, "cpu") == {"10.0.1.1", "10.0.1.3"}, what="the relisted cpu pool")
        assert "gpu" not in discovery.read().by_pool, "a slice deleted during the gap must not survive the relist"
        assert discovery.relists == 2
    finally:
        discovery.stop()


def test_a_watch_the_server_times_out_resumes_from_its_bookmark_without_relisting(apiserver):
    apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1")))
    discovery = start_discovery(apiserver, watch_timeout_s=1)
    try:
        assert discovery.wait_synced(10)
        wait_for(lambda: sum("watch=true" in r for r in apiserver.requests) >= 3, what="two watch timeouts")
        apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1"), pod_endpoint("10.0.1.4", "cpu-4")))
        wait_for(lambda: serving_hosts(discovery, "cpu") == {"10.0.1.1", "10.0.1.4"}, what="the change after timeouts")
        assert discovery.relists == 1 and discovery.resyncs_after_gone == 0
        assert "allowWatchBookmarks=true" in [r for r in apiserver.requests if "watch=true" in r][-1]
    finally:
        discovery.stop()


def test_an_api_server_away_keeps_the_last_set_then_refuses_once_stale(apiserver):
    now = [1000.0]
    apiserver.apply(cpu_slice(pod_endpoint("10.0.1.1", "cpu-1")))
    discovery = start_discovery(apiserver, stale_after_s=30, clock=lambda: now[0])
    try:
        assert discovery.wait_synced(10)
        wait_for(lambda: any("watch=true" in r for r in apiserver.requests), what="the watch to open")
        apiserver.stop()
        wait_for(lambda: discovery.status()["last_error"] is not None, timeout_s=30,
                 what="the broken watch to be noticed (took over 10 s once on a loaded 2-core machine)")
        assert serving_hosts(discovery, "cpu") == {"10.0.1.1"}, "a short outage keeps the last replica set"
        now[0] += 31
        with pytest.raises(DiscoveryError, match="broken for 31s"):
            discovery.read()
    finally:
        discovery.stop()
