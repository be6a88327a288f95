"""The whole built config as sorted, readable YAML.  After an intended change, regenerate with
``UPDATE_GOLDEN=1 pytest tests/xds_server/test_golden.py`` and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from xds_server import build_snapshot
from xds_server.bootstrap import envoy_bootstrap, proxyless_bootstrap
from xds_server.examples import three_pools, tiered_routes
from xds_server.grpc_model_header import lua_source
from xds_server.protos import SHORT_NAMES, to_dict

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _snapshot_yaml() -> str:
    snapshot = build_snapshot(three_pools(), tiered_routes())
    doc = {
        SHORT_NAMES[t]: {name: to_dict(m) for name, m in resources.items()}
        for t, resources in snapshot.resources.items()
    }
    # The Lua source is long and has its own golden file; keep the YAML readable.
    grpc = doc["LDS"]["grpc"]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    assert grpc["typed_config"]["default_source_code"]["inline_string"] == lua_source()
    grpc["typed_config"]["default_source_code"]["inline_string"] = "<golden/grpc_model_header.lua>"
    return yaml.safe_dump(doc, sort_keys=True, width=120)


@pytest.mark.parametrize(
    "name,render",
    [
        ("snapshot.yaml", _snapshot_yaml),
        ("grpc_model_header.lua", lua_source),
        (
            "envoy_bootstrap.yaml",
            lambda: yaml.safe_dump(envoy_bootstrap(node_id="envoy-1", xds_port=18000), sort_keys=True),
        ),
        (
            "proxyless_bootstrap.yaml",
            lambda: yaml.safe_dump(proxyless_bootstrap(node_id="client-1", xds_port=18000), sort_keys=True),
        ),
    ],
)
def test_built_config_matches_golden_file(name, render):
    path = GOLDEN / name
    text = render()
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed: review, then UPDATE_GOLDEN=1 to accept"
