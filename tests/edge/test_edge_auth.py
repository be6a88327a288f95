"""Who may ask for what, through a real Envoy in front of a real Triton (issue 16's
authentication test): no credential, a wrong one and a valid one above its tier entitlement are
each refused with the right status on REST and gRPC; a valid one within its entitlement is served;
``downgrade`` serves it at a lower tier instead; each identity has its own rate limit."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.edge.conftest import assert_platform_serves, good_rest_body
from xds_server.edge_settings import EdgeAuth, EdgeSettings, EdgeValidation, Identity
from xds_server.edge_tokens import jwks, mint, new_key
from xds_server.edge_validation import schemas_from_models

pytestmark = pytest.mark.integration
ISSUER, AUDIENCE = "https://edge.test", "kserve"
KEY, OTHER_KEY = new_key(), new_key()
IDENTITIES = (Identity("alice", ("gold", "silver", "bronze"), requests_per_second=1000),
              Identity("batch-job", ("bronze",), requests_per_second=1000),
              Identity("limited", ("silver", "bronze"), requests_per_second=1, burst=3))


def token(sub: str, key=KEY, **kw) -> str:
    return mint(key, subject=sub, issuer=kw.pop("issuer", ISSUER), audience=kw.pop("audience", AUDIENCE), **kw)


def tampered() -> str:
    """alice's token with batch-job's payload: the signature no longer matches."""
    head, _, sig = token("alice").split(".")
    return ".".join((head, token("batch-job").split(".")[1], sig))


def closed(above_entitlement: str = "deny") -> EdgeSettings:
    return EdgeSettings(auth=EdgeAuth(mode="closed", issuer=ISSUER, audiences=(AUDIENCE,), jwks=jwks(KEY),
                                      identities=IDENTITIES, above_entitlement=above_entitlement))


@pytest.fixture(scope="module")
def plane(edge_plane):
    edge_plane.publish(EdgeSettings(
        auth=closed().auth,
        validation=EdgeValidation(enabled=True, models=schemas_from_models(edge_plane.models))))
    yield edge_plane
    edge_plane.publish(EdgeSettings())


def rest(plane, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"http://{plane.http_url}/v2/models/digits_classifier/infer", json=good_rest_body(),
                         headers=headers, timeout=30)


def grpc_status(plane, metadata: dict[str, str]) -> str:
    client = grpcclient.InferenceServerClient(plane.grpc_url)
    inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
    try:
        client.infer("digits_classifier", [inp], headers=metadata, client_timeout=30)
    except InferenceServerException as e:
        return f"{e.status()} {e.message()}"
    return "OK"


def bearer(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


REFUSED = [
    ("no-credential", {}, 401, "UNAUTHENTICATED", "Jwt is missing"),
    ("garbage-credential", bearer("not-a-jwt"), 401, "UNAUTHENTICATED", "Jwt"),
    ("signed-by-another-key", bearer(token("alice", OTHER_KEY)), 401, "UNAUTHENTICATED", "Jwks doesn't have key"),
    ("tampered-payload", bearer(tampered()), 401, "UNAUTHENTICATED", "Jwt verification fails"),
    ("wrong-audience", bearer(token("alice", audience="other")), 403, "PERMISSION_DENIED", "Audiences"),
    ("expired", bearer(token("alice", ttl_s=-120)), 401, "UNAUTHENTICATED", "expired"),
    ("unknown-identity", bearer(token("mallory")), 403, "PERMISSION_DENIED", "not entitled to any tier"),
    ("above-entitlement", {**bearer(token("batch-job")), "x-sla-tier": "gold"}, 403, "PERMISSION_DENIED",
     "may not use tier 'gold' (allowed: bronze)"),
]


@pytest.mark.parametrize(("headers", "http_status", "grpc_code", "message"),
                         [pytest.param(*c[1:], id=c[0]) for c in REFUSED])
def test_a_request_without_a_valid_credential_or_above_its_entitlement_is_refused(
        plane, headers, http_status, grpc_code, message):
    r = rest(plane, headers)
    assert r.status_code == http_status, r.text
    assert message in r.text
    status = grpc_status(plane, headers)
    assert status.startswith(f"StatusCode.{grpc_code}"), status
    assert_platform_serves(plane, headers=bearer(token("alice")), metadata=bearer(token("alice")))


def vcluster_count(plane, tier: str) -> int:
    stats = plane.envoy.admin_get(f"/stats?filter=vcluster\\.{tier}\\.upstream_rq_total$")
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip())


@pytest.mark.parametrize(("sub", "tier", "served_as"), [
    ("alice", "gold", "gold"), ("alice", None, "silver"), ("batch-job", "bronze", "bronze"),
    # Not entitled to the default tier and asking none: served at the tier it may use.
    ("batch-job", None, "bronze"),
])
def test_a_valid_credential_within_its_entitlement_is_served_at_its_tier(plane, sub, tier, served_as):
    headers = {**bearer(token(sub)), **({"x-sla-tier": tier} if tier else {})}
    before = vcluster_count(plane, served_as)
    r = rest(plane, headers)
    assert r.status_code == 200, r.text
    assert grpc_status(plane, headers) == "OK"
    assert vcluster_count(plane, served_as) - before == 2


def test_health_stays_public(plane):
    assert requests.get(f"http://{plane.http_url}/v2/health/ready", timeout=10).status_code == 200
    assert grpcclient.InferenceServerClient(plane.grpc_url).is_server_ready()


def test_a_client_cannot_claim_an_identity_by_header(plane):
    headers = {"x-edge-identity": "alice", "x-sla-tier": "gold"}
    assert rest(plane, headers).status_code == 401


def test_each_identity_has_its_own_rate_limit(plane):
    """``limited``: 1 request per second, a bucket of 3.  A quick burst is cut at the bucket (plus
    whatever refilled meanwhile) with 429 and a retry hint; gRPC gets RESOURCE_EXHAUSTED; alice,
    sending at the same time, is not limited."""
    headers = {**bearer(token("limited")), "x-sla-tier": "silver"}
    start = time.monotonic()
    codes = [rest(plane, headers).status_code for _ in range(8)]
    elapsed = time.monotonic() - start
    ok = codes.count(200)
    assert 3 <= ok <= 3 + int(elapsed) + 1, codes
    assert set(codes) == {200, 429}, codes
    limited = rest(plane, headers)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    # REST and gRPC are two listeners, each with its own buckets (docs/edge.md).
    grpc_codes = [grpc_status(plane, headers).split(" ")[0] for _ in range(8)]
    assert "StatusCode.RESOURCE_EXHAUSTED" in grpc_codes and grpc_codes.count("OK") <= 3 + 2, grpc_codes
    alice = bearer(token("alice"))
    assert [rest(plane, alice).status_code for _ in range(5)] == [200] * 5


def test_downgrade_serves_above_entitlement_at_the_best_allowed_tier(plane):
    plane.publish(EdgeSettings(auth=closed("downgrade").auth))
    try:
        headers = {**bearer(token("batch-job")), "x-sla-tier": "gold"}
        before = vcluster_count(plane, "bronze")
        assert rest(plane, headers).status_code == 200
        assert grpc_status(plane, headers) == "OK"
        assert vcluster_count(plane, "bronze") - before == 2
    finally:
        plane.publish(EdgeSettings(auth=closed().auth,
                                   validation=EdgeValidation(enabled=True, models=schemas_from_models(plane.models))))
