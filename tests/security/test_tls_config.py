"""What mTLS changes in the generated configuration, and what it leaves alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleet.triton_process import GrpcTls, Ports, TritonProcess
from xds_server import DataPlaneSettings, Endpoint, PoolEndpoints, build_snapshot, even_routes
from xds_server.bootstrap import XDS_CLUSTER, envoy_bootstrap, write_envoy_bootstrap
from xds_server.certs import ensure_certs
from xds_server.envoy_process import validate_bootstrap
from xds_server.protos import CLUSTER, to_dict
from xds_server.tls import UPSTREAM_TLS_TYPE, CertDir, Role, UpstreamTls, upstream_transport_socket

POOL = PoolEndpoints(pool="cpu", accelerator="cpu", emulated=False, models=("digits_classifier",),
                     replicas=(Endpoint("127.0.0.1", 8100, 8101),))
TLS = UpstreamTls("/certs/ca.crt", "/certs/envoy.crt", "/certs/envoy.key", Role.TRITON.server_name)


def _clusters(settings: DataPlaneSettings) -> dict[str, dict]:
    snapshot = build_snapshot([POOL], even_routes([POOL], settings), settings)
    return {name: to_dict(message) for name, message in snapshot.resources[CLUSTER].items()}


def test_without_upstream_tls_no_cluster_has_a_transport_socket():
    assert all("transport_socket" not in c for c in _clusters(DataPlaneSettings()).values())


def test_grpc_clusters_require_mtls_and_http_clusters_stay_plaintext():
    clusters = _clusters(DataPlaneSettings(upstream_tls=TLS))
    grpc = {n: c for n, c in clusters.items() if "--grpc" in n}
    http = {n: c for n, c in clusters.items() if "--http" in n}
    assert grpc and http
    for cluster in grpc.values():
        socket = cluster["transport_socket"]
        assert socket["typed_config"]["@type"] == UPSTREAM_TLS_TYPE
        context = socket["typed_config"]
        assert context["sni"] == "triton.inference.local"
        common = context["common_tls_context"]
        assert common["alpn_protocols"] == ["h2"]
        assert common["tls_certificates"] == [{"certificate_chain": {"filename": "/certs/envoy.crt"},
                                               "private_key": {"filename": "/certs/envoy.key"}}]
        validation = common["validation_context"]
        assert validation["trusted_ca"] == {"filename": "/certs/ca.crt"}
        assert validation["match_typed_subject_alt_names"] == [
            {"san_type": "DNS", "matcher": {"exact": "triton.inference.local"}}]
    assert all("transport_socket" not in c for c in http.values())


@pytest.mark.parametrize("kwargs, message", [
    ({"ca_cert": "ca.crt"}, "absolute path"),
    ({"key": "build/certs/envoy.key"}, "absolute path"),
    ({"server_name": ""}, "server_name is empty"),
], ids=["relative-ca", "relative-key", "no-server-name"])
def test_upstream_tls_refuses_what_envoy_would_misread(kwargs, message):
    fields = {"ca_cert": "/c/ca.crt", "cert": "/c/envoy.crt", "key": "/c/envoy.key", "server_name": "x", **kwargs}
    with pytest.raises(ValueError, match=message):
        UpstreamTls(**fields)


def test_envoy_verifies_each_server_by_its_own_name(tmp_path):
    certs = CertDir(tmp_path)
    assert UpstreamTls.to(Role.XDS_SERVER, certs).server_name == "xds.inference.local"
    assert UpstreamTls.to(Role.TRITON, certs).server_name == "triton.inference.local"
    assert UpstreamTls.to(Role.TRITON, certs).cert == str((tmp_path / "envoy.crt").resolve())
    with pytest.raises(ValueError, match="not a server identity"):
        UpstreamTls.to(Role.ENVOY, certs)


def test_the_bootstrap_dials_the_xds_server_over_mtls_only_when_asked():
    plain = envoy_bootstrap(node_id="n", xds_port=18000)
    secured = envoy_bootstrap(node_id="n", xds_port=18000,
                              xds_tls=UpstreamTls("/c/ca.crt", "/c/envoy.crt", "/c/envoy.key", "xds.inference.local"))
    plain_cluster, secured_cluster = (b["static_resources"]["clusters"][0] for b in (plain, secured))
    assert plain_cluster["name"] == secured_cluster["name"] == XDS_CLUSTER
    assert "transport_socket" not in plain_cluster
    assert secured_cluster["transport_socket"] == upstream_transport_socket(
        UpstreamTls("/c/ca.crt", "/c/envoy.crt", "/c/envoy.key", "xds.inference.local"))
    assert {k: v for k, v in secured_cluster.items() if k != "transport_socket"} == plain_cluster
    # The admin interface stays on loopback in both.
    assert secured["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.mark.integration
def test_envoy_accepts_the_mtls_bootstrap(tmp_path):
    ensure_certs(tmp_path / "certs")
    path = write_envoy_bootstrap(tmp_path / "envoy.yaml", node_id="envoy-mtls", xds_port=18000,
                                 xds_tls=UpstreamTls.to(Role.XDS_SERVER, CertDir(tmp_path / "certs")))
    validate_bootstrap(path)
    assert "envoy.transport_sockets.tls" in yaml.safe_dump(yaml.safe_load(path.read_text()))


def test_triton_requires_client_certificates_on_grpc_only_when_asked(tmp_path):
    def command(**kwargs) -> list[str]:
        return TritonProcess("t", tmp_path, tmp_path, tmp_path / "log", ports=Ports(1, 2, 3), shm_prefix="p_", **kwargs).command()

    plain = command()
    tls = GrpcTls(Path("/c/triton.crt"), Path("/c/triton.key"), Path("/c/ca.crt"))
    secured = command(grpc_tls=tls)
    assert not any("ssl" in flag or "cert" in flag for flag in plain)
    assert secured[:len(plain)] == plain
    assert secured[len(plain):] == ["--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true",
                                    "--grpc-server-cert=/c/triton.crt", "--grpc-server-key=/c/triton.key",
                                    "--grpc-root-cert=/c/ca.crt"]
    for address in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"):
        assert address in secured


def test_the_control_server_refuses_an_mtls_dir_without_certificates_naming_the_fix(tmp_path, capsys):
    from control.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--runtime", str(tmp_path / "runtime.json"), "--state", str(tmp_path / "state.json"),
              "--mtls-dir", str(tmp_path / "certs")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--mtls-dir: xds-server:" in err and "ca.crt is missing" in err and "python -m xds_server.certs" in err
