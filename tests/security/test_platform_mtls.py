"""The local platform with mTLS on (``python -m local_platform up`` does it by default): the
control server's ADS port and every replica's gRPC port refuse a client without the certificate,
Envoy gets its snapshot and serves a request end to end over mTLS, and nothing the platform
started listens beyond loopback.  One real CPU pool serving the real digits model keeps it short.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from local_platform.platform import LocalPlatform, PlatformPorts
from tests.security.test_mtls_integration import _ads_call, _client_without_certificate, _listening_addresses, _stat
from xds_server.naming import cluster_name

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FLEET = f"""\
prices: {ROOT / "data" / "prices.yaml"}
tiers: {ROOT / "data" / "tiers.yaml"}
profiles: profiles
pools:
  - {{name: cpu, accelerator: cpu, instance_type: c7g.xlarge, replicas: 1, mode: real}}
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory, artifacts):
    folder = tmp_path_factory.mktemp("platform-mtls")
    (folder / "profiles").mkdir()
    shutil.copy(ROOT / "profiles" / "digits_classifier.cpu.yaml", folder / "profiles")
    (folder / "fleet.yaml").write_text(FLEET)
    p = LocalPlatform(fleet_path=folder / "fleet.yaml", workdir=folder / "run", artifacts=artifacts,
                      ports=PlatformPorts(http=0, grpc=0), interval_s=0.5, mtls_dir=folder / "certs")
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_the_platform_says_it_runs_with_mtls(platform):
    assert platform.describe()["mtls"] == str(platform.cert_dir.root)
    assert (platform.cert_dir.root / "ca.crt").is_file()


@pytest.mark.parametrize("credentials", ["plaintext", "tls-without-certificate"])
def test_the_control_servers_ads_port_refuses_a_client_without_the_certificate(platform, credentials):
    creds = None if credentials == "plaintext" else _client_without_certificate(platform.cert_dir.ca_cert)
    with pytest.raises(grpc.RpcError) as refused:
        _ads_call(platform.ports.xds, creds)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("ssl", [{}, {"ssl": True}], ids=["plaintext", "tls-without-certificate"])
def test_every_replicas_grpc_port_refuses_a_client_without_the_certificate(platform, ssl):
    replicas = platform.supervisor.processes("cpu")
    assert replicas
    for replica in replicas:
        if ssl:
            ssl = {"ssl": True, "root_certificates": str(platform.cert_dir.ca_cert)}
        with pytest.raises(InferenceServerException):
            grpcclient.InferenceServerClient(replica.grpc_url, **ssl).is_server_ready(client_timeout=5)


def test_envoy_serves_grpc_end_to_end_over_mtls(platform):
    digits = np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"][:1].astype(np.float32)
    client = grpcclient.InferenceServerClient(platform.describe()["grpc_endpoint"])
    inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
    inp.set_data_from_numpy(digits)
    for tier in ("gold", "silver", "bronze"):
        assert client.infer("digits_classifier", [inp], headers={"x-sla-tier": tier}, client_timeout=10)
    assert _stat(platform.envoy, "cluster.xds_cluster.ssl.handshake") >= 1
    grpc_cluster = cluster_name("digits_classifier", "cpu", "grpc")
    assert _stat(platform.envoy, f"cluster.{grpc_cluster}.ssl.handshake") >= 1
    assert _stat(platform.envoy, f"cluster.{grpc_cluster}.upstream_rq_completed") >= 3


def test_admin_metrics_and_serving_ports_of_every_process_listen_on_loopback_only(platform):
    import ipaddress

    pids = {"envoy": platform.envoy.pid, "control-server": platform.control.pid,
            **{r.name: r.pid for r in platform.supervisor.processes("cpu")}}
    control = _listening_addresses(pids["control-server"])
    # The control server's xDS and admin HTTP ports are among what is checked.
    assert {f"127.0.0.1:{platform.ports.xds}", f"127.0.0.1:{platform.ports.admin}"} <= control
    for name, pid in pids.items():
        addresses = _listening_addresses(pid)
        assert addresses, name
        for address in addresses:
            assert ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback, f"{name} listens on {address}"


def test_envoy_reconnects_over_mtls_to_the_restarted_control_server(platform):
    """A crashed control server is restarted by the supervision with the same certificates; Envoy's
    new ADS stream is a new mTLS handshake, and the snapshot in force is ACKed on it."""
    import os
    import signal

    before = _stat(platform.envoy, "cluster.xds_cluster.ssl.handshake")
    old_pid = platform.control.pid
    os.kill(old_pid, signal.SIGKILL)

    def reconnected() -> bool:
        try:
            return (platform.control is not None and platform.control.pid != old_pid
                    and _stat(platform.envoy, "cluster.xds_cluster.ssl.handshake") > before
                    and platform._envoy_acked())
        except OSError:  # the new server's admin is not up yet
            return False

    platform.wait_for(reconnected, 60, "Envoy's ADS stream to the restarted control server, over mTLS, ACKed")
    assert _stat(platform.envoy, "cluster.xds_cluster.ssl.connection_error") == 0
    test_envoy_serves_grpc_end_to_end_over_mtls(platform)


def test_a_release_runs_on_a_platform_with_mtls_candidate_comparator_and_preflight_over_mtls(platform, artifacts,
                                                                                           tmp_path):
    """The release tooling with ``--mtls-dir``: a candidate serving gRPC over mTLS (Envoy's candidate
    cluster carries the TLS context like every other), the shadow comparator replaying mirrored gRPC to
    both versions over mTLS, and the measured pre-flight profiling both over mTLS.  Without the
    identity the comparator's replay fails (the control)."""
    from fleet.supervisor import wait_until
    from fleet.triton_process import GrpcTls
    from local_platform.platform import http_json
    from model_repository.definitions import load_models
    from releases.candidates import CandidateReplicas
    from releases.comparator import Comparator
    from releases.load import TierLoad
    from releases.preflight import MeasurePlan, preflight_measured
    from router_lib.release_spec import load_release_spec
    from tests.releases.test_release_end_to_end import start
    from xds_server.tls import ReplicaTls

    tls = ReplicaTls(platform.cert_dir)
    server = tls.server
    cand = CandidateReplicas(load_models()["digits_classifier"], "7", "cpu", platform.workdir / "candidate-v7",
                             artifacts, grpc_tls=GrpcTls(server.cert, server.key, server.ca_cert)).start()
    stable_http = [f"127.0.0.1:{r.http_port}" for r in platform.supervisor.replicas()]
    stable_grpc = [f"127.0.0.1:{r.grpc_port}" for r in platform.supervisor.replicas()]
    cand_http = [f"127.0.0.1:{e.http_port}" for e in cand.endpoints()]
    cand_grpc = [f"127.0.0.1:{e.grpc_port}" for e in cand.endpoints()]
    plaintext = Comparator(stable_http, cand_http, grpc_port=0, stable_grpc=stable_grpc, candidate_grpc=cand_grpc).start()
    comparator = Comparator(stable_http, cand_http, grpc_port=0, stable_grpc=stable_grpc, candidate_grpc=cand_grpc,
                            replica_tls=tls).start()
    digits = np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"][:8].astype(np.float32)

    def body(i: int) -> dict:
        return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32",
                            "data": digits[i % len(digits)].tolist()}]}
    load = TierLoad(platform.describe()["grpc_endpoint"], {"bronze": 20, "silver": 5}, body, protocol="grpc",
                    model="digits_classifier").start()
    try:
        # the measured pre-flight reaches a stable replica and the candidate over mTLS
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text("name: pre\nmodel: digits_classifier\nstable: {version: 1}\ncandidate: {version: 7}\n"
                             "steps: [50, 100]\n")
        gate = preflight_measured(load_release_spec(spec_path), cand.endpoints(), stable_urls={"cpu": stable_grpc[0]},
                                  plan=MeasurePlan(measure_s=0.3, warmup_s=0.1, batch_sizes=(1,), confirm=False),
                                  out_dir=tmp_path / "preflight", progress=lambda _: None, replica_tls=tls)
        assert "pre-flight" in gate.report and "candidate" in gate.report, gate.report
        # a shadow release: Envoy mirrors gRPC to the comparator, which asks both versions over mTLS
        start(platform, tmp_path, "mtls", cand, "--comparator", comparator.address, steps=[20, 100],
              shadow={"mirror_percent": 100}, step={"min_time_s": 60, "min_requests": 10},
              thresholds={"min_agreement": 0.95, "min_judge_requests": 5})
        wait_until(lambda: comparator.compared["grpc"] >= 10, 30, "mirrored gRPC requests compared over mTLS")
        assert comparator.errors == 0 and comparator.score_sum / comparator.score_count > 0.99
        # the candidate serves its share through Envoy's TLS candidate cluster
        wait_until(lambda: "7" in {v for c in load.versions().values() for v in c}, 30, "the candidate serving")
        # the control: the same replay without the identity cannot reach the replicas
        inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
        inp.set_data_from_numpy(digits[:1])
        grpcclient.InferenceServerClient(f"127.0.0.1:{plaintext.grpc_port}").infer("digits_classifier", [inp])
        wait_until(lambda: plaintext.errors >= 1, 15, "the plaintext replay refused by the replicas")
        assert plaintext.score_count == 0
    finally:
        load.stop()
        comparator.stop()
        plaintext.stop()
        cand.stop()
        http_json(f"{platform.admin_url}/releases/mtls/abort", method="POST")
    assert load.failures() == []
