"""Releases in the control loop: start, the fast path's rollback, commands, the persisted record and
a restart mid-rollout, with fake ports around the real snapshot builder (no processes)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from control.actuator_fixed import FixedFleetActuator
from control.loop import ControlLoop
from control.ports import PoolServing, PublishResult
from control.release_admin import handle_get, handle_post
from control.releases import ReleaseMetrics
from control.route_sink_xds import pool_endpoints
from control.status import render_status
from router_lib.release import (
    CandidateEndpoint,
    Command,
    PoolComparison,
    ReleaseCommandError,
    ReleaseObservation,
    VersionWindow,
)
from router_lib.release_spec import parse_release_spec
from router_lib.routes import RouteWeights
from tests.control.fakes import Clock, FakeDiscovery, FakeMetrics, MemoryStore, replicas
from tests.router_lib.builders import EMBED, THREE_POOLS, metrics
from xds_server import build_snapshot
from xds_server.inputs import CandidatePool, DataPlaneSettings, MirrorTarget, VersionSplit
from xds_server.protos import CLUSTER, ROUTE, to_dict

SPEC = {"name": "emb-v2", "model": EMBED, "stable": {"version": 1}, "candidate": {"version": 2},
        "steps": [10, 50, 100], "step": {"min_time_s": 5, "min_requests": 10}}
ENDPOINTS = [CandidateEndpoint("cpu", "127.0.0.1", 9500, 9501, "http://127.0.0.1:9502/metrics")]


class SnapshotSink:
    """Builds the real xDS snapshot and refuses an inconsistent one, like ``XdsRouteSink``."""

    def __init__(self) -> None:
        self.snapshots: list = []

    def publish(self, pools: Sequence[PoolServing], routes: Sequence[RouteWeights], *,
                splits: Sequence[VersionSplit] = (), candidates: Sequence[CandidatePool] = (),
                mirrors: Sequence[MirrorTarget] = ()) -> PublishResult:
        snap = build_snapshot([pool_endpoints(p) for p in pools if p.replicas], routes, DataPlaneSettings(),
                              splits=splits, candidates=candidates, mirrors=mirrors)
        if snap.consistent():
            return PublishResult(self.version, False, tuple(snap.consistent()))
        if snap.version == self.version:
            return PublishResult(snap.version, False)
        self.snapshots.append(snap)
        return PublishResult(snap.version, True)

    @property
    def version(self) -> str | None:
        return self.snapshots[-1].version if self.snapshots else None

    def wait_acked(self, version: str, timeout_s: float) -> bool:
        return version == self.version

    def status(self) -> list:
        return []

    def candidate_share(self, tier: str) -> float:
        config = to_dict(self.snapshots[-1].resources[ROUTE]["http"])
        route = next(r for r in config["virtual_hosts"][0]["routes"] if r["name"] == f"{EMBED}/{tier}")
        clusters = route["route"]["weighted_clusters"]["clusters"]
        total = sum(c.get("weight", 0) for c in clusters)
        return sum(c.get("weight", 0) for c in clusters if c["name"].endswith("--v2")) / total


def make_loop(store: MemoryStore | None = None) -> tuple[ControlLoop, SnapshotSink, Clock, MemoryStore]:
    sink, clock, store = SnapshotSink(), Clock(1.7e9), store or MemoryStore()
    loop = ControlLoop(fleet=THREE_POOLS, discovery=FakeDiscovery(replicas(cpu=2, gpu=1, inf=1)),
                       metrics=FakeMetrics(metrics({("cpu", EMBED): {"request_rate_per_s": 5.0}})),
                       sink=sink, store=store, actuator=FixedFleetActuator({p.name: p.replicas for p in THREE_POOLS.pools}),
                       clock=clock, wall_clock=clock)
    return loop, sink, clock, store


def observe(total: float, candidate: VersionWindow) -> dict[str, ReleaseObservation]:
    stable = VersionWindow(100, 0, 20, 30, 10)
    return {"emb-v2": ReleaseObservation(total, (PoolComparison("cpu", stable, candidate),), source="fast")}


def started() -> tuple[ControlLoop, SnapshotSink, Clock, MemoryStore]:
    loop, sink, clock, store = make_loop()
    loop.tick()
    loop.start_release(parse_release_spec(SPEC), ENDPOINTS)
    return loop, sink, clock, store


def test_a_started_release_sends_its_first_step_of_bronze_only_to_the_candidate() -> None:
    loop, sink, _, store = started()
    assert sink.candidate_share("bronze") == pytest.approx(0.10)
    assert sink.candidate_share("silver") == 0 and sink.candidate_share("gold") == 0
    assert store.record["deciders"]["releases"]["emb-v2"]["stage"] == 0
    status = render_status(THREE_POOLS, loop.view, [])
    assert status["releases"][0]["candidate_weight_pct"] == {"bronze": 10.0, "silver": 0.0, "gold": 0.0}
    loop.tick()  # a tick keeps the split (routing re-decides; the release composes with it)
    assert sink.candidate_share("bronze") == pytest.approx(0.10)


def test_the_fast_path_rolls_back_in_one_push_and_exports_it() -> None:
    loop, sink, clock, store = started()
    registry = CollectorRegistry()
    loop.release_listeners.append(ReleaseMetrics(registry))
    pushes = len(sink.snapshots)
    clock.advance(0.05)
    assert loop.releases_observed(observe(5, VersionWindow(20, 0, 20, 30, 11))) == []  # healthy: nothing pushed
    assert len(sink.snapshots) == pushes
    actions = loop.releases_observed(observe(30, VersionWindow(20, 0, 20, 30, 250)))
    assert [a.kind.value for a in actions] == ["rollback"]
    assert len(sink.snapshots) == pushes + 1 and sink.candidate_share("bronze") == 0
    assert registry.get_sample_value("release_rollbacks_total", {"release": "emb-v2", "model": EMBED}) == 1
    release = render_status(THREE_POOLS, loop.view, [])["releases"][0]
    assert release["phase"] == "rolled_back" and "mean latency on cpu" in release["rollback_reason"]
    assert store.record["deciders"]["releases"]["emb-v2"]["phase"] == "rolled_back"


def test_a_restarted_control_server_resumes_the_rollout_at_the_same_step() -> None:
    loop, sink, clock, store = started()
    loop.releases_observed(observe(0, VersionWindow()))
    clock.advance(6)
    loop.releases_observed(observe(12, VersionWindow()))  # stage 1: bronze 50%, silver 10%
    loop.tick()
    before = {t: sink.candidate_share(t) for t in ("bronze", "silver", "gold")}
    assert before == {"bronze": pytest.approx(0.5), "silver": pytest.approx(0.1), "gold": 0}
    again, sink2, clock2, _ = make_loop(MemoryStore(json.loads(json.dumps(store.record))))
    clock2.t = clock.t + 2
    assert again.resume()
    assert {t: sink2.candidate_share(t) for t in before} == before  # never 0%, never 100%
    again.tick()
    assert {t: sink2.candidate_share(t) for t in before} == before
    clock2.advance(3.5)  # 5.5 s in the step, counted across the restart
    actions = again.releases_observed(observe(25, VersionWindow()))
    assert [a.kind.value for a in actions] == ["advance"]


def test_commands_and_what_they_refuse() -> None:
    loop, sink, _, _ = started()
    with pytest.raises(ReleaseCommandError, match="already has release emb-v2"):
        loop.start_release(parse_release_spec({**SPEC, "name": "other"}), ENDPOINTS)
    with pytest.raises(KeyError, match="no release named 'nope'"):
        loop.release_command("nope", Command.PAUSE)
    loop.release_command("emb-v2", Command.PAUSE)
    loop.release_command("emb-v2", Command.PROMOTE, "looks good")
    assert all(sink.candidate_share(t) == 1.0 for t in ("bronze", "silver", "gold"))
    with pytest.raises(ReleaseCommandError, match="is promoted"):
        loop.release_command("emb-v2", Command.PAUSE)
    loop.release_command("emb-v2", Command.ABORT, "revert")  # a promoted release can be reverted
    assert all(sink.candidate_share(t) == 0.0 for t in ("bronze", "silver", "gold"))


def test_the_admin_api_names_what_is_wrong() -> None:
    loop, _, _, _ = make_loop()
    loop.tick()
    bad = json.dumps({"spec": {**SPEC, "steps": [50, 10]}, "endpoints": []}).encode()
    code, body = handle_post(loop, "/releases/start", {}, bad)
    assert code == 400 and "spec: steps[1]: must be greater than the step before (50)" in body["error"]
    code, body = handle_post(loop, "/releases/start", {}, json.dumps({"spec": SPEC, "endpoints": []}).encode())
    assert code == 400 and "at least one candidate replica" in body["error"]
    wrong_pool = [{**ENDPOINTS[0].to_json(), "pool": "tpu"}]
    code, body = handle_post(loop, "/releases/start", {}, json.dumps({"spec": SPEC, "endpoints": wrong_pool}).encode())
    assert code == 400 and "pool 'tpu' does not serve" in body["error"]
    code, body = handle_post(loop, "/releases/start", {}, json.dumps(
        {"spec": SPEC, "endpoints": [e.to_json() for e in ENDPOINTS]}).encode())
    assert code == 200 and body["actions"][0]["kind"] == "start"
    assert handle_post(loop, "/releases/emb-v2/explode", {}, b"")[0] == 404
    assert handle_post(loop, "/releases/emb-v2/abort", {"note": ["bad idea"]}, b"")[0] == 200
    code, body = handle_get(loop, "/releases")
    assert body["releases"][0]["phase"] == "aborted" and "bad idea" in body["releases"][0]["reason"]


def test_shadow_mode_mirrors_the_http_routes_to_the_comparator_and_needs_one() -> None:
    loop, sink, _, _ = make_loop()
    loop.tick()
    spec = parse_release_spec({**SPEC, "shadow": {"mirror_percent": 25}})
    with pytest.raises(ReleaseCommandError, match="no comparator was given"):
        loop.start_release(spec, ENDPOINTS)
    loop.start_release(spec, ENDPOINTS, comparator="127.0.0.1:9600")
    snap = sink.snapshots[-1]
    assert "_mirror--" + EMBED + "--http" in snap.resources[CLUSTER] and snap.consistent() == []
    routes = {r["name"]: r for r in to_dict(snap.resources[ROUTE]["http"])["virtual_hosts"][0]["routes"]}
    policy = routes[f"{EMBED}/bronze"]["route"]["request_mirror_policies"][0]
    assert policy["runtime_fraction"]["default_value"] == {"numerator": 2500, "denominator": "TEN_THOUSAND"}
    # tier-aware like the live share: silver and gold join later, so they are not mirrored yet
    assert "request_mirror_policies" not in routes[f"{EMBED}/silver"]["route"]
    assert "request_mirror_policies" not in routes[f"{EMBED}/gold"]["route"]
    grpc = to_dict(snap.resources[ROUTE]["grpc"])["virtual_hosts"][0]["routes"]
    assert not any("request_mirror_policies" in r.get("route", {}) for r in grpc)  # the comparator speaks HTTP


def test_a_comparator_with_a_grpc_port_gets_the_grpc_routes_mirrored_over_h2() -> None:
    loop, sink, _, _ = make_loop()
    loop.tick()
    spec = parse_release_spec({**SPEC, "shadow": {"mirror_percent": 25}})
    loop.start_release(spec, ENDPOINTS, comparator="127.0.0.1:9600:9601")
    snap = sink.snapshots[-1]
    assert snap.consistent() == []
    clusters = {name: to_dict(c) for name, c in snap.resources[CLUSTER].items()}
    grpc_cluster = clusters[f"_mirror--{EMBED}--grpc"]
    assert grpc_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"]["port_value"] == 9601
    assert "http2_protocol_options" in str(grpc_cluster["typed_extension_protocol_options"])
    assert "typed_extension_protocol_options" not in clusters[f"_mirror--{EMBED}--http"]
    for proto in ("http", "grpc"):
        routes = {r["name"]: r for r in to_dict(snap.resources[ROUTE][proto])["virtual_hosts"][0]["routes"]}
        [policy] = routes[f"{EMBED}/bronze"]["route"]["request_mirror_policies"]
        assert policy["cluster"] == f"_mirror--{EMBED}--{proto}"


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:x", "127.0.0.1:1:2:3", ":9600", "127.0.0.1:70000"])
def test_a_malformed_comparator_address_is_refused_naming_the_form(bad: str) -> None:
    loop, _, _, _ = make_loop()
    loop.tick()
    spec = parse_release_spec({**SPEC, "shadow": {"mirror_percent": 25}})
    code, body = handle_post(loop, "/releases/start", {}, json.dumps(
        {"spec": spec.to_json(), "endpoints": [e.to_json() for e in ENDPOINTS], "comparator": bad}).encode())
    assert code == 400 and "HOST:HTTP_PORT[:GRPC_PORT]" in body["error"]


def test_a_tier_is_mirrored_from_the_stage_it_joins() -> None:
    loop, sink, clock, _ = make_loop()
    loop.tick()
    spec = parse_release_spec({**SPEC, "steps": [0, 50, 100], "shadow": {"mirror_percent": 100},
                               "step": {"min_time_s": 1, "min_requests": 1}})
    loop.start_release(spec, ENDPOINTS, comparator="127.0.0.1:9600")

    def mirrored() -> set[str]:
        routes = to_dict(sink.snapshots[-1].resources[ROUTE]["http"])["virtual_hosts"][0]["routes"]
        return {r["name"].split("/")[1] for r in routes if "request_mirror_policies" in r.get("route", {})}
    assert mirrored() == {"bronze"}  # the default route is silver's here: not joined either
    loop.releases_observed(observe(0.0, VersionWindow(50, 0, 20, 30, 10)))  # the stage's request base
    for stage in (1, 2):
        clock.advance(2)
        loop.releases_observed(observe(100.0 * stage, VersionWindow(50, 0, 20, 30, 10)))
        assert loop.view.releases.releases["emb-v2"].stage == stage
    assert mirrored() == {"bronze", "silver", "gold", "default"}
