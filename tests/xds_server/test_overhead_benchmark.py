"""The Envoy-overhead benchmark's parts: variants of the shipped config (pure), the raw-bytes load
generator and the report's arithmetic; and, against a real Envoy and fake KServe pools, that every
variant of the shipped chain is accepted and still serves (so the benchmark cannot measure a
variant that silently failed)."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2

from benchmarks.xds.envoy_variants import (
    ROUTER,
    Variant,
    apply,
    bootstrap_for,
    http_filters,
    lua_filters,
    one_at_a_time,
)
from benchmarks.xds.grpc_loadgen import ClosedLoop, model_infer_request
from benchmarks.xds.overhead_report import build_summary, part_costs, topology
from xds_server import build_snapshot, protos
from xds_server.bootstrap import envoy_bootstrap
from xds_server.examples import three_pools, tiered_routes
from xds_server.naming import GRPC_LISTENER, GRPC_ROUTES
from xds_server.protos import to_dict


def _shipped():
    return build_snapshot(three_pools(), tiered_routes())


def _variants():
    return one_at_a_time(_shipped(), GRPC_LISTENER, concurrency=2, bootstrap={})


def test_the_shipped_variant_is_the_snapshot_unchanged():
    snapshot = _shipped()
    assert apply(snapshot, Variant("shipped", 2)).version == snapshot.version


def test_every_filter_of_the_shipped_grpc_chain_gets_a_variant_without_it():
    chain = http_filters(_shipped(), GRPC_LISTENER)
    assert chain[-1] == ROUTER
    names = {v.name for v in _variants()}
    for f in chain[:-1]:
        assert f"without {f.removeprefix('envoy.filters.http.')}" in names


@pytest.mark.parametrize("variant", _variants(), ids=lambda v: v.name)
def test_a_variant_removes_exactly_its_filters_and_keeps_the_router_last(variant):
    snapshot = _shipped()
    changed = apply(snapshot, variant)
    before, after = http_filters(snapshot, GRPC_LISTENER), http_filters(changed, GRPC_LISTENER)
    assert after == [f for f in before if f not in variant.without_filters]
    assert after[-1] == ROUTER
    assert changed.consistent() == []


def test_removing_the_router_or_an_absent_filter_is_refused():
    with pytest.raises(ValueError, match="not in the chain"):
        apply(_shipped(), Variant("bad", 1, without_filters=frozenset({ROUTER})))
    with pytest.raises(ValueError, match="not in the chain"):
        apply(_shipped(), Variant("bad", 1, without_filters=frozenset({"envoy.filters.http.nonesuch"})))


def test_the_variant_without_retries_has_no_retry_policy_and_keeps_the_routes():
    snapshot = _shipped()
    changed = apply(snapshot, Variant("r", 2, without_route_parts=frozenset({"retry_policy"})))
    routes = to_dict(changed.resources[protos.ROUTE][GRPC_ROUTES])["virtual_hosts"][0]["routes"]
    before = to_dict(snapshot.resources[protos.ROUTE][GRPC_ROUTES])["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == [r["name"] for r in before]
    assert not any("retry_policy" in r.get("route", {}) for r in routes)
    assert any("retry_policy" in r.get("route", {}) for r in before)


def test_bootstrap_changes_touch_only_a_copy():
    shipped = envoy_bootstrap(node_id="n", xds_port=1)
    stats_off = bootstrap_for(shipped, Variant("s", 2, bootstrap_change="stats_off"))
    assert stats_off["stats_config"]["stats_matcher"] == {"reject_all": True}
    assert "stats_matcher" not in shipped["stats_config"]
    codec = bootstrap_for(shipped, Variant("c", 2, bootstrap_change="nghttp2"))
    assert codec["layered_runtime"]["layers"][0]["static_layer"] == {"envoy.reloadable_features.http2_use_oghttp2": False}


@pytest.mark.parametrize("model", ["digits_classifier", "text_embedding"])
def test_the_sample_request_names_its_model_in_field_one(model):
    raw = model_infer_request(model)
    assert raw[0] == 0x0A  # field 1, length-delimited: what the gRPC model-header Lua reads
    request = service_pb2.ModelInferRequest.FromString(raw)
    assert request.model_name == model
    assert len(request.raw_input_contents) == 1


def test_a_sample_request_for_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="no sample request for model 'resnet'"):
        model_infer_request("resnet")


def _phase(repeat, path, p50, rps, envoy_us):
    return {"repeat": repeat, "path": path, "p50_ms": p50, "req_per_s": rps, "envoy_cpu_us_per_req": envoy_us,
            "load_average_1m": 1.0}


def test_a_parts_cost_is_compared_within_each_repeat():
    phases = [_phase(0, "shipped", 2.0, 100, 150), _phase(0, "without lua", 1.8, 110, 130),
              _phase(1, "shipped", 4.0, 50, 170), _phase(1, "without lua", 3.9, 52, 160)]
    cost = part_costs(phases)["without lua"]
    assert cost["p50_ms"] == {"median": 0.15, "min": 0.1, "max": 0.2}
    assert cost["envoy_cpu_us_per_req"]["median"] == 15


def test_the_summary_judges_the_targets_on_the_shipped_medians():
    def stats(v):
        return {"median": v, "min": v, "max": v}

    def path(p50, added, x, envoy):
        return {"p50_ms": stats(p50), "p99_ms": stats(p50 * 2), "req_per_s": stats(1000 * x),
                "added_p50_ms": stats(added), "throughput_x_direct": stats(x), "envoy_cpu_us_per_req": stats(envoy),
                "triton_cpu_us_per_req": stats(200), "client_cpu_us_per_req": stats(100), "errors": 0,
                "requests": 10}
    raw = {"benchmark": "b", "date_utc": "d", "machine": "m", "command": "c", "shipped_grpc_chain": [],
           "seconds_per_phase": 1, "repeats": 1, "connections": 4,
           "models": {"m x4": {"summary": {"direct": path(1.0, 0, 1.0, 0), "shipped": path(1.4, 0.4, 0.8, 100)},
                               "phases": [_phase(0, "direct", 1.0, 1000, 0), _phase(0, "shipped", 1.4, 800, 100)]}}}
    summary = build_summary(raw)["models"]["m x4"]
    assert summary["targets"]["added_p50_met"] is True
    assert summary["targets"]["throughput_met"] is False
    assert summary["cpu_bound_ceiling_x_direct"] == 0.75  # (200 + 100) / (200 + 100 + 100)


@pytest.mark.parametrize(("cores", "says"), [
    ({}, "share these 2 cores"),
    ({"envoy_core": 1}, "Triton and the client to the other CPU"),
    ({"envoy_core": 1, "client_core": 1}, "the client to CPU 1, Triton alone"),
])
def test_the_report_says_where_each_process_ran(cores, says):
    assert says in topology(cores)


def test_the_client_core_needs_the_envoy_core():
    from benchmarks.xds.envoy_overhead import main

    with pytest.raises(SystemExit):
        main(["--client-core", "1"])


@pytest.mark.integration
def test_every_variant_of_the_shipped_chain_is_accepted_by_envoy_and_serves(tmp_path):
    from benchmarks.xds.envoy_overhead import start_envoy_path, upstream_reuse
    from xds_server import DataPlaneSettings, RouteWeights
    from xds_server.testbed import FakePool

    pool = FakePool.start("cpu", ("digits_classifier",))
    settings = DataPlaneSettings()
    routes = [RouteWeights.of("digits_classifier", t, (("cpu", 100),)) for t in settings.tiers]
    started = []
    try:
        # The floor removes every part at once (each removal alone is checked above, without Envoy).
        for variant in [v for v in _variants() if v.name in ("shipped", "floor", "nghttp2 codec", "concurrency 1")]:
            path = start_envoy_path(variant, settings, [pool.endpoints()], routes, tmp_path)
            started.append(path)
            loop = ClosedLoop(f"127.0.0.1:{path.grpc_port}", model_infer_request("digits_classifier"),
                              (("x-sla-tier", "gold"), ("x-model", "digits_classifier")), connections=2)
            try:
                result = loop.run(0.3)
            finally:
                loop.close()
            assert (variant.name, result.errors, result.first_error) == (variant.name, 0, "")
            assert result.requests > 0
            if variant.bootstrap_change != "stats_off":  # Envoy's counters: keep-alive upstream connections
                reuse = upstream_reuse(path)
                assert 1 <= reuse["connections"] <= variant.concurrency
                assert reuse["requests"] >= result.requests
            path.stop()
    finally:
        for path in started:
            path.stop()
        pool.stop()


def test_with_several_lua_filters_one_variant_turns_them_all_off():
    import dataclasses

    from model_repository.definitions import load_models
    from xds_server import DataPlaneSettings
    from xds_server.edge_settings import EdgeSettings, EdgeValidation
    from xds_server.edge_validation import schemas_from_models

    settings = dataclasses.replace(DataPlaneSettings(), edge=EdgeSettings(
        validation=EdgeValidation(enabled=True, models=schemas_from_models(load_models()))))
    snapshot = build_snapshot(three_pools(), tiered_routes(), settings)
    scripts = lua_filters(snapshot, GRPC_LISTENER)
    assert len(scripts) >= 2
    (all_off,) = [v for v in one_at_a_time(snapshot, GRPC_LISTENER, concurrency=2, bootstrap={})
                  if v.name == "without any Lua filter"]
    assert not set(lua_filters(apply(snapshot, all_off), GRPC_LISTENER))
    assert "without any Lua filter" not in {v.name for v in _variants()}  # one script: nothing to add


@pytest.mark.parametrize("cpus,workers", [(1, 1), (2, 1), (3, 1), (8, 4)])
def test_an_envoy_sharing_its_machine_with_the_model_servers_gets_half_the_cpus(cpus, workers):
    from xds_server.envoy_process import shared_host_concurrency

    assert shared_host_concurrency(cpus) == workers


def test_with_admission_the_clusters_upstream_shed_filter_gets_a_variant_that_keeps_the_codec():
    import dataclasses

    from benchmarks.xds.envoy_variants import upstream_filters
    from router_lib.config import load_tiers
    from xds_server import DataPlaneSettings
    from xds_server.overload import tier_resilience
    from xds_server.testbed import ROOT

    settings = dataclasses.replace(DataPlaneSettings(), **tier_resilience(load_tiers(ROOT / "data" / "tiers.yaml")))
    snapshot = build_snapshot(three_pools(), tiered_routes(), settings)
    assert upstream_filters(snapshot) == ["tmas.shed_not_retried"]
    (off,) = [v for v in one_at_a_time(snapshot, GRPC_LISTENER, concurrency=2, bootstrap={})
              if v.name == "without upstream filters"]
    changed = apply(snapshot, off)
    assert upstream_filters(changed) == []
    grpc_clusters = [to_dict(c) for c in changed.resources[protos.CLUSTER].values() if "grpc" in c.name]
    assert grpc_clusters and all(
        "http2_protocol_options" in c["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] for c in grpc_clusters)
    assert changed.consistent() == []
    assert "without upstream filters" not in {v.name for v in _variants()}  # no admission: nothing to add


def test_the_machines_idle_polling_is_read_and_said_in_the_report(tmp_path, monkeypatch):
    from benchmarks import common
    from benchmarks.xds.overhead_report import idle_sentence

    (tmp_path / "driver").write_text("haltpoll\n")
    (tmp_path / "poll").write_text("0\n")
    monkeypatch.setattr(common, "CPUIDLE_DRIVER", tmp_path / "driver")
    monkeypatch.setattr(common, "HALT_POLL", tmp_path / "poll")
    assert common.cpu_idle_settings() == {"cpuidle_driver": "haltpoll", "guest_halt_poll_ns": 0}
    assert "halted at once" in idle_sentence(common.cpu_idle_settings())
    assert "polled 200 us before halting" in idle_sentence({"cpuidle_driver": "haltpoll", "guest_halt_poll_ns": 200000})
    monkeypatch.setattr(common, "HALT_POLL", tmp_path / "absent")
    assert common.cpu_idle_settings()["guest_halt_poll_ns"] is None
    assert idle_sentence(None) == "" and idle_sentence({"cpuidle_driver": None}) == ""


def test_the_halt_poll_diagnostic_reports_each_setting_against_the_target_from_the_run_folders(tmp_path):
    import json

    from benchmarks.xds.halt_poll_diagnostic import folder_of, write_report

    for ns, added in ((0, (0.9, 0.7)), (200000, (0.3, 0.45))):
        for r, value in enumerate(added, start=1):
            folder = folder_of(tmp_path, ns, r)
            folder.mkdir()
            (folder / "raw.json").write_text(json.dumps({"cpu_idle": {"cpuidle_driver": "haltpoll", "guest_halt_poll_ns": ns}}))
            (folder / "summary.json").write_text(json.dumps({
                "date_utc": "2026-11-30T13:09:23Z", "load_average_1m": {"median": 1.0, "min": 0.5, "max": 2.0},
                "models": {"text_embedding x1": {"paths": {"shipped": {"added_p50_ms": value}}}}}))
    text = write_report(tmp_path, 0, 200000, 2)
    assert "| text_embedding x1 | +0.80 ms (+0.90, +0.70): missed | +0.38 ms (+0.30, +0.45): met |" in text
    assert "load average 0.50 .. 2.00" in text and "nothing emulated" in text
    assert json.loads((tmp_path / "summary.json").read_text())["added_p50_ms"]["200000"] == [
        {"text_embedding x1": 0.3}, {"text_embedding x1": 0.45}]
