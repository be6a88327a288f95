"""The edge's configuration boundary and builders, without processes: the file's errors name the
field; the default settings build exactly today's listeners; closed mode builds its filters in the
agreed order and every built resource parses as Envoy's protos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from model_repository.definitions import load_models
from router_lib.config import ConfigError
from xds_server import DataPlaneSettings, Endpoint, PoolEndpoints, build_snapshot, even_routes
from xds_server.edge_config import load_edge_config, local_default
from xds_server.edge_settings import EdgeAuth, EdgeSettings, EdgeValidation, Identity
from xds_server.edge_tokens import jwks, mint, new_key, private_pem
from xds_server.edge_validation import kserve_datatype, lua_source, schemas_from_models
from xds_server.listeners import envoy_listeners
from xds_server.naming import GRPC_LISTENER, HTTP_LISTENER
from xds_server.protos import LISTENER

TIERS = ("gold", "silver", "bronze")
KEY = new_key()
SCHEMAS = schemas_from_models(load_models())


def write(tmp_path: Path, doc: dict, jwks_text: str | None = None) -> Path:
    (tmp_path / "jwks.json").write_text(jwks_text if jwks_text is not None else jwks(KEY))
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def closed_doc(**auth) -> dict:
    return {"auth": {"mode": "closed", "issuer": "https://edge.test", "audiences": ["kserve"], "jwks_file": "jwks.json",
                     "identities": {"alice": {"tiers": ["gold"], "requests_per_second": 5}}, **auth}}


def filter_names(settings: DataPlaneSettings) -> list[list[str]]:
    return [[f["name"] for f in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]]
            for listener in envoy_listeners(settings)]


def test_the_default_settings_build_todays_listeners():
    assert envoy_listeners(DataPlaneSettings()) == envoy_listeners(DataPlaneSettings(edge=EdgeSettings()))
    assert not any("edge" in name or "jwt" in name for names in filter_names(DataPlaneSettings()) for name in names)


def test_closed_mode_with_validation_builds_its_filters_first_and_in_order():
    settings = DataPlaneSettings(edge=EdgeSettings(
        auth=EdgeAuth(mode="closed", issuer="i", audiences=("a",), jwks=jwks(KEY), identities=(Identity("a", TIERS),)),
        validation=EdgeValidation(enabled=True, models=SCHEMAS)))
    edge = ["envoy.filters.http.jwt_authn", "envoy.filters.http.lua.edge_entitlement",
            "envoy.filters.http.local_ratelimit", "envoy.filters.http.lua.edge_validation"]
    http, grpc = filter_names(settings)
    assert http[:4] == edge and grpc[:4] == edge
    assert http[-1] == grpc[-1] == "envoy.filters.http.router"
    pool = PoolEndpoints("cpu", "cpu", False, ("digits_classifier",), (Endpoint("127.0.0.1", 1, 2),))
    snapshot = build_snapshot([pool], even_routes([pool], settings), settings)  # parses every resource
    assert {HTTP_LISTENER, GRPC_LISTENER} <= set(snapshot.resources[LISTENER])


def test_the_lua_source_has_every_slot_filled_and_the_models_schemas():
    source = lua_source(EdgeValidation(enabled=True, models=SCHEMAS))
    assert "%(" not in source
    assert '["digits_classifier"] = { max_batch = 64' in source
    assert 'expect = "[batch<=32, 1]"' in source  # text_embedding's TEXT


@pytest.mark.parametrize(("triton", "kserve"), [("TYPE_FP32", "FP32"), ("TYPE_STRING", "BYTES"), ("TYPE_INT64", "INT64")])
def test_model_config_types_map_to_kserve_datatypes(triton, kserve):
    assert kserve_datatype(triton) == kserve


def test_a_file_with_closed_mode_loads(tmp_path):
    settings = load_edge_config(write(tmp_path, closed_doc(above_entitlement="downgrade")), tiers=TIERS, models=SCHEMAS)
    assert settings.auth.closed and settings.auth.above_entitlement == "downgrade"
    assert settings.auth.identities == (Identity("alice", ("gold",), 5.0),)
    assert settings.validation.enabled and settings.validation.models == SCHEMAS


def test_the_local_default_is_open_with_validation():
    settings = local_default(SCHEMAS)
    assert not settings.auth.closed and settings.validation.enabled


@pytest.mark.parametrize(("doc", "jwks_text", "field", "message"), [
    pytest.param({"auth": {"mode": "shut"}}, None, "auth.mode", "must be one of", id="unknown-mode"),
    pytest.param({"auth": {"mode": "closed"}}, None, "auth.jwks_file", "is required", id="closed-without-jwks"),
    pytest.param(closed_doc(issuer=None), None, "auth.issuer", "is required", id="closed-without-issuer"),
    pytest.param(closed_doc(identities={"alice": {"tiers": ["platinum"]}}), None, "auth.identities.alice.tiers",
                 "unknown tier 'platinum'", id="unknown-tier"),
    pytest.param(closed_doc(identities={"alice": {"tiers": ["gold"], "requests_per_second": 0}}), None,
                 "auth.identities.alice.requests_per_second", "> 0", id="zero-rate"),
    pytest.param(closed_doc(identities={"alice": {"tier": ["gold"]}}), None, "auth.identities.alice.tier",
                 "unknown field", id="typo-in-identity"),
    pytest.param(closed_doc(identities={}), None, "auth", "at least one identity", id="no-identity"),
    pytest.param(closed_doc(above_entitlement="allow"), None, "auth.above_entitlement", "must be one of",
                 id="bad-above-entitlement"),
    pytest.param(closed_doc(), "not json", "auth.jwks_file", "not a readable JWKS", id="jwks-not-json"),
    pytest.param(closed_doc(), json.dumps({"keys": [{"kty": "RSA", "d": "secret"}]}), "auth.jwks_file",
                 "private key", id="jwks-with-a-private-key"),
    pytest.param({"validation": {"max_body_bytes": 0}}, None, "validation.max_body_bytes", ">= 1", id="zero-body"),
    pytest.param({"validation": {"enabled": "yes"}}, None, "validation.enabled", "true or false", id="enabled-not-bool"),
    pytest.param({"validaton": {}}, None, "validaton", "unknown field", id="typo-top-level"),
])
def test_a_bad_file_is_refused_naming_the_field(tmp_path, doc, jwks_text, field, message):
    with pytest.raises(ConfigError) as err:
        load_edge_config(write(tmp_path, doc, jwks_text), tiers=TIERS, models=SCHEMAS)
    assert err.value.field == field, str(err.value)
    assert message in str(err.value)


def test_validation_may_not_exceed_the_listener_buffer():
    settings = DataPlaneSettings(max_request_bytes=1024, edge=EdgeSettings(validation=EdgeValidation(enabled=True)))
    with pytest.raises(ValueError, match="exceeds the listener buffer"):
        envoy_listeners(settings)


def test_a_minted_token_verifies_with_the_published_key():
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    tok = mint(KEY, subject="alice", issuer="i", audience="a", now=1000)
    head, payload, sig = tok.split(".")
    pad = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    assert json.loads(pad(payload)) == {"sub": "alice", "iss": "i", "aud": "a", "iat": 1000, "exp": 4600}
    public = serialization.load_pem_private_key(private_pem(KEY), password=None).public_key()
    public.verify(pad(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    assert json.loads(jwks(KEY))["keys"][0]["kid"] == json.loads(pad(head))["kid"]


def test_the_control_server_refuses_a_bad_edge_config_naming_the_field(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "edge.yaml").write_text("auth:\n  mode: shut\n")
    p = subprocess.run([sys.executable, "-m", "control", "serve", f"--runtime={tmp_path / 'rt.json'}",
                        f"--state={tmp_path / 'state.json'}", "--xds-port=0", "--admin-port=0",
                        f"--edge-config={tmp_path / 'edge.yaml'}"],
                       capture_output=True, text=True, timeout=60, cwd=root, env={"PYTHONPATH": str(root)})
    assert p.returncode != 0
    assert "edge.yaml: auth.mode: must be one of ['open', 'closed'], got 'shut'" in p.stderr
