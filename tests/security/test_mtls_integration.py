"""mTLS end to end with real processes: a real tritonserver whose gRPC port requires a client
certificate, the ADS server on an mTLS-only port, and a real Envoy holding the ``envoy`` identity.

What could fail here: a client without the certificate (or with another CA's, or with a server's
certificate used as a client's) getting through to the xDS server or to Triton's gRPC port;
Envoy failing its handshakes (no snapshot, no inference); an admin or metrics port bound beyond
loopback.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import ipaddress
import os
import socket
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from tritonclient.utils import InferenceServerException

from fleet.triton_process import GrpcTls, TritonProcess, prepare_backend_dir
from localnet.ports import free_port
from model_repository.definitions import load_models
from model_repository.triton_config import Target, write_repository
from xds_server import DataPlaneSettings, Endpoint, EnvoyProcess, PoolEndpoints, XdsServer, build_snapshot, even_routes
from xds_server.bootstrap import write_envoy_bootstrap
from xds_server.certs import ensure_certs
from xds_server.envoy_process import validate_bootstrap
from xds_server.naming import cluster_name
from xds_server.protos import CLUSTER
from xds_server.tls import CertDir, Identity, Role, UpstreamTls, grpc_channel_credentials

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits_classifier"


class Stack:
    def __init__(self, root: Path, artifacts: Path) -> None:
        self.certs = CertDir(root / "certs")
        ensure_certs(self.certs.root)
        triton_id = self.certs.identity(Role.TRITON)
        repo = write_repository(root / "repo", [(load_models()[MODEL], Target("cpu"))], artifacts)
        self.triton = TritonProcess("mtls-cpu-0", repo, prepare_backend_dir(root / "backends"), root / "triton.log",
                                    grpc_tls=GrpcTls(triton_id.cert, triton_id.key, triton_id.ca_cert))
        self.xds = XdsServer(port=0, tls=self.certs.identity(Role.XDS_SERVER))
        self.settings = DataPlaneSettings(http_port=free_port(), grpc_port=free_port(),
                                          upstream_tls=UpstreamTls.to(Role.TRITON, self.certs))
        self.envoy: EnvoyProcess | None = None
        self.root = root

    def start(self) -> Stack:
        self.triton.start()
        self.triton.wait_ready(timeout_s=90)
        self.xds.start()
        pool = PoolEndpoints(pool="cpu", accelerator="cpu", emulated=False, models=(MODEL,),
                             replicas=(Endpoint("127.0.0.1", self.triton.ports.http, self.triton.ports.grpc),))
        self.version = self.xds.set_snapshot(build_snapshot([pool], even_routes([pool], self.settings), self.settings))
        bootstrap = write_envoy_bootstrap(self.root / "envoy.yaml", node_id="envoy-mtls", xds_port=self.xds.port,
                                          xds_tls=UpstreamTls.to(Role.XDS_SERVER, self.certs))
        validate_bootstrap(bootstrap)
        self.envoy = EnvoyProcess(bootstrap, concurrency=1, log_path=self.root / "envoy.log").start()
        self.envoy.wait_ready(timeout_s=30)
        return self

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.xds.stop()
        self.triton.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, artifacts):
    s = Stack(tmp_path_factory.mktemp("mtls"), artifacts)
    try:
        yield s.start()
    finally:
        s.stop()


def _other_ca_identity() -> Identity:
    """A complete, valid identity from a CA the platform does not trust."""
    other = CertDir(Path(tempfile.mkdtemp(prefix="other-ca-")))
    ensure_certs(other.root)
    return other.identity(Role.ENVOY)


def _ads_call(port: int, credentials: grpc.ChannelCredentials | None, timeout_s: float = 5.0) -> None:
    """Open an ADS stream and wait for the first answer; raises grpc.RpcError when refused."""
    target = f"127.0.0.1:{port}"
    options = [("grpc.ssl_target_name_override", Role.XDS_SERVER.server_name)]
    channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target)
    with channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        request.node.id = "intruder"
        next(iter(stub.StreamAggregatedResources(iter([request]), timeout=timeout_s)))


def _client_without_certificate(ca: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())


@pytest.mark.parametrize("client", ["plaintext", "tls-without-certificate", "certificate-of-another-ca",
                                    "triton-server-certificate"])
def test_a_client_without_the_envoy_certificate_is_refused_by_the_xds_server(stack, client):
    credentials = {
        "plaintext": lambda: None,
        "tls-without-certificate": lambda: _client_without_certificate(stack.certs.ca_cert),
        "certificate-of-another-ca": lambda: grpc_channel_credentials(_other_ca_identity()),
        # A replica's key must not open an ADS stream: its certificate is for serverAuth only.
        "triton-server-certificate": lambda: grpc_channel_credentials(stack.certs.identity(Role.TRITON)),
    }[client]()
    with pytest.raises(grpc.RpcError) as refused:
        _ads_call(stack.xds.port, credentials)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
    assert all(s.get("node") != "intruder" for s in stack.xds.status())


def test_the_envoy_certificate_opens_an_ads_stream(stack):
    """The control for the refusals above: the same call with the right identity is answered."""
    _ads_call(stack.xds.port, grpc_channel_credentials(stack.certs.identity(Role.ENVOY)))


def _triton_client(stack, **ssl) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(stack.triton.grpc_url, **ssl)


@pytest.mark.parametrize("client", ["plaintext", "tls-without-certificate", "certificate-of-another-ca"])
def test_a_client_without_the_certificate_is_refused_by_tritons_grpc_port(stack, client):
    ca = str(stack.certs.ca_cert)
    other = _other_ca_identity() if client == "certificate-of-another-ca" else None
    ssl = {
        "plaintext": {},
        "tls-without-certificate": {"ssl": True, "root_certificates": ca},
        "certificate-of-another-ca": {"ssl": True, "root_certificates": ca,
                                      "private_key": str(other.key) if other else "",
                                      "certificate_chain": str(other.cert) if other else ""},
    }[client]
    with pytest.raises(InferenceServerException):
        _triton_client(stack, **ssl).is_server_ready(client_timeout=5)


def test_the_envoy_certificate_is_served_by_tritons_grpc_port(stack):
    envoy = stack.certs.identity(Role.ENVOY)
    client = _triton_client(stack, ssl=True, root_certificates=str(envoy.ca_cert), private_key=str(envoy.key),
                            certificate_chain=str(envoy.cert),
                            channel_args=[("grpc.ssl_target_name_override", Role.TRITON.server_name)])
    assert client.is_model_ready(MODEL, client_timeout=5)


def _digits() -> np.ndarray:
    return np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"][:1].astype(np.float32)


def _stat(envoy: EnvoyProcess, name: str) -> int:
    for line in envoy.admin_get("/stats?filter=" + name.replace(".", r"\.")).splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise AssertionError(f"Envoy has no stat {name}")


def test_envoy_gets_its_snapshot_over_mtls_and_serves_grpc_over_mtls_end_to_end(stack):
    assert stack.xds.wait_acked(stack.version, timeout_s=10), stack.xds.status()
    assert _stat(stack.envoy, "cluster.xds_cluster.ssl.handshake") >= 1
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{stack.settings.grpc_port}")
    inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
    inp.set_data_from_numpy(_digits())
    for _ in range(5):
        result = client.infer(MODEL, [inp], headers={"x-sla-tier": "gold"}, client_timeout=10)
        assert result.as_numpy("label").shape[0] == 1
    grpc_cluster = cluster_name(MODEL, "cpu", "grpc")
    assert _stat(stack.envoy, f"cluster.{grpc_cluster}.ssl.handshake") >= 1
    assert _stat(stack.envoy, f"cluster.{grpc_cluster}.upstream_rq_completed") >= 5
    assert _stat(stack.envoy, f"cluster.{grpc_cluster}.ssl.connection_error") == 0


def test_rest_goes_to_tritons_http_port_in_plaintext_on_loopback(stack):
    """Triton's HTTP port has no TLS (docs/security.md): REST stays plaintext, on loopback only."""
    body = {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": _digits()[0].tolist()}]}
    response = requests.post(f"http://127.0.0.1:{stack.settings.http_port}/v2/models/{MODEL}/infer", json=body,
                             timeout=10)
    assert response.status_code == 200, response.text
    http_cluster = cluster_name(MODEL, "cpu", "http")
    assert "ssl.handshake" not in stack.envoy.admin_get(f"/stats?filter=cluster\\.{http_cluster}\\.ssl")


def _listening_addresses(pid: int) -> set[str]:
    """host:port of every TCP socket ``pid`` listens on (its fds matched with /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            host_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(host_hex)
            # /proc prints each 32-bit word in host byte order (little-endian here).
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(socket.inet_ntop(family, raw))
            # gRPC binds a dual-stack socket: 127.0.0.1 shows as ::ffff:127.0.0.1.
            address = getattr(address, "ipv4_mapped", None) or address
            found.add(f"{address}:{int(port_hex, 16)}")
    return found


def test_every_port_of_envoy_triton_and_the_xds_server_listens_on_loopback_only(stack):
    envoy_ports = _listening_addresses(stack.envoy.pid)
    triton_ports = _listening_addresses(stack.triton.pid)
    ours = {a for a in _listening_addresses(os.getpid()) if a.endswith(f":{stack.xds.port}")}
    admin = stack.envoy.admin_url.removeprefix("http://")
    assert admin in envoy_ports  # the admin interface is among what was checked
    assert {f"127.0.0.1:{p}" for p in (stack.triton.ports.http, stack.triton.ports.grpc,
                                       stack.triton.ports.metrics)} <= triton_ports
    assert ours == {f"127.0.0.1:{stack.xds.port}"}
    for address in envoy_ports | triton_ports | ours:
        assert ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback, f"{address} is reachable beyond loopback"


def test_certificates_are_short_lived(stack):
    from xds_server.certs import inspect

    infos, problem = inspect(stack.certs.root)
    assert problem == ""
    now = dt.datetime.now(dt.UTC)
    assert all(dt.timedelta(days=6) < i.left(now) <= dt.timedelta(days=7) for i in infos), infos


def _wait_for_stat(envoy: EnvoyProcess, name: str, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = _stat(envoy, name)
        except (AssertionError, OSError):  # admin not up yet, or the counter not created yet
            value = 0
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{name} stayed 0 for {timeout_s}s:\n{envoy.admin_get('/stats?filter=ssl')}")


@pytest.mark.parametrize("impostor, refusal", [
    ("replica-certificate", "ssl.fail_verify_san"),  # same CA, but named triton.inference.local
    ("another-ca", "ssl.fail_verify_error"),
])
def test_envoy_refuses_a_server_squatting_on_the_xds_port(stack, tmp_path, impostor, refusal):
    """A process holding the control server's port (say, while the control server restarts) is
    refused by Envoy: it gets no stream, Envoy gets no config from it."""
    identity = (stack.certs.identity(Role.TRITON) if impostor == "replica-certificate"
                else CertDir(_other_ca_identity().cert.parent).identity(Role.XDS_SERVER))
    squatter = XdsServer(port=0, tls=identity)
    squatter.start()
    envoy = None
    try:
        squatter.set_snapshot(build_snapshot([], [], stack.settings))
        bootstrap = write_envoy_bootstrap(tmp_path / "envoy.yaml", node_id="envoy-squatted", xds_port=squatter.port,
                                          xds_tls=UpstreamTls.to(Role.XDS_SERVER, stack.certs))
        envoy = EnvoyProcess(bootstrap, concurrency=1, log_path=tmp_path / "envoy.log").start()
        _wait_for_stat(envoy, f"cluster.xds_cluster.{refusal}")
        assert squatter.status() == []
        assert _stat(envoy, "cluster.xds_cluster.ssl.handshake") == 0
    finally:
        if envoy is not None:
            envoy.stop()
        squatter.stop()


def test_envoy_refuses_a_server_squatting_on_a_replicas_grpc_port(stack, tmp_path):
    """A gRPC server with a certificate of the right CA but not a replica's name (the control
    server's) stands where the snapshot says a replica is: Envoy's requests fail verification and
    never reach it."""
    squatter = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    from xds_server.tls import grpc_server_credentials

    port = squatter.add_secure_port("127.0.0.1:0", grpc_server_credentials(stack.certs.identity(Role.XDS_SERVER)))
    squatter.start()
    xds = XdsServer(port=0, tls=stack.certs.identity(Role.XDS_SERVER))
    xds.start()
    envoy = None
    try:
        settings = DataPlaneSettings(http_port=free_port(), grpc_port=free_port(),
                                     upstream_tls=UpstreamTls.to(Role.TRITON, stack.certs))
        pool = PoolEndpoints(pool="cpu", accelerator="cpu", emulated=False, models=(MODEL,),
                             replicas=(Endpoint("127.0.0.1", stack.triton.ports.http, port),))
        version = xds.set_snapshot(build_snapshot([pool], even_routes([pool], settings), settings))
        bootstrap = write_envoy_bootstrap(tmp_path / "envoy.yaml", node_id="envoy-replica-squatted", xds_port=xds.port,
                                          xds_tls=UpstreamTls.to(Role.XDS_SERVER, stack.certs))
        envoy = EnvoyProcess(bootstrap, concurrency=1, log_path=tmp_path / "envoy.log").start().wait_ready(30)
        assert xds.wait_acked(version, timeout_s=10)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}")
        inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
        inp.set_data_from_numpy(_digits())
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [inp], client_timeout=10)
        assert _wait_for_stat(envoy, f"cluster.{cluster_name(MODEL, 'cpu', 'grpc')}.ssl.fail_verify_san") >= 1
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()
        squatter.stop(0)
