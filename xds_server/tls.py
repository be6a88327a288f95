"""mTLS between the local platform's processes: where each identity's files live, and the Envoy
and gRPC configuration that uses them (docs/security.md has the threat model).

Three identities, one local CA (``xds_server.certs`` makes them):
  * ``xds-server``: the control server's ADS port presents it and requires a client certificate;
  * ``envoy``: presented by Envoy to the xDS server and to every Triton gRPC port;
  * ``triton``: every replica's gRPC port presents it and requires a client certificate.
Roles are kept apart twice: by extended key usage (server certificates are ``serverAuth`` only,
Envoy's is ``clientAuth`` only, so a replica's key cannot open an ADS stream or a connection to
another replica) and by name (Envoy checks that the xDS server is ``xds.inference.local`` and a
replica ``triton.inference.local``, so one server cannot stand in for the other).

Everything here is a pure value or builder except ``grpc_server_credentials``, which reads files;
nothing imports ``cryptography``, so the data plane needs no more than paths.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

# Registers UpstreamTlsContext in the descriptor pool: clusters carrying a transport socket are
# parsed by json_format, which resolves an Any's @type only for imported modules (FINDINGS).
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401

UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CA_CERT_FILE = "ca.crt"


class Role(enum.Enum):
    """An identity; ``server_name`` is the DNS name its certificate carries (empty: client only)."""

    XDS_SERVER = "xds-server"
    ENVOY = "envoy"
    TRITON = "triton"

    @property
    def server_name(self) -> str:
        return _SERVER_NAMES[self]

    @property
    def is_server(self) -> bool:
        return self is not Role.ENVOY


_SERVER_NAMES = {
    Role.XDS_SERVER: "xds.inference.local",
    Role.TRITON: "triton.inference.local",
    Role.ENVOY: "envoy.inference.local",
}


class MtlsConfigError(ValueError):
    """A certificate directory that cannot be used: which file, and what to run."""


@dataclass(frozen=True)
class Identity:
    """What one process needs for mTLS: its certificate and key, and the CA it trusts in peers."""

    role: Role
    ca_cert: Path
    cert: Path
    key: Path

    def check(self) -> Identity:
        """Raise ``MtlsConfigError`` naming the first missing file."""
        for path in (self.ca_cert, self.cert, self.key):
            if not path.is_file():
                raise MtlsConfigError(
                    f"{self.role.value}: {path} is missing; generate the certificates with "
                    f"`python -m xds_server.certs --out {path.parent}` (make certs)")
        return self


@dataclass(frozen=True)
class CertDir:
    """The layout of a certificate directory: ``ca.crt`` and ``<role>.crt`` / ``<role>.key``.
    There is no CA key: it lives only in memory while the set is made (renewal makes a new CA),
    so a reader of this directory can use the identities in it but never mint another."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / CA_CERT_FILE

    def identity(self, role: Role) -> Identity:
        return Identity(role, self.ca_cert, self.root / f"{role.value}.crt", self.root / f"{role.value}.key")

    def check(self) -> CertDir:
        for role in Role:
            self.identity(role).check()
        return self


@dataclass(frozen=True)
class UpstreamTls:
    """Envoy's side of an mTLS connection to an upstream: the client identity it presents, the CA
    it trusts, and the name the upstream's certificate must carry (also sent as SNI).  Paths are
    strings because they travel inside xDS resources and are read by Envoy, not by us."""

    ca_cert: str
    cert: str
    key: str
    server_name: str

    def __post_init__(self) -> None:
        for name in ("ca_cert", "cert", "key"):
            if not Path(getattr(self, name)).is_absolute():
                raise ValueError(f"UpstreamTls.{name} {getattr(self, name)!r}: Envoy needs an absolute path")
        if not self.server_name:
            raise ValueError("UpstreamTls.server_name is empty: Envoy would accept any certificate of the CA")

    @classmethod
    def to(cls, upstream: Role, cert_dir: CertDir) -> UpstreamTls:
        """Envoy's identity, verifying that the upstream is ``upstream``."""
        if not upstream.is_server:
            raise ValueError(f"{upstream.value} is not a server identity")
        envoy = cert_dir.identity(Role.ENVOY)
        return cls(str(envoy.ca_cert.resolve()), str(envoy.cert.resolve()), str(envoy.key.resolve()),
                   upstream.server_name)


def upstream_transport_socket(tls: UpstreamTls, *, alpn: tuple[str, ...] = ("h2",)) -> dict[str, Any]:
    """An Envoy ``transport_socket`` (proto3 JSON) for a cluster whose hosts require mTLS.

    ``alpn`` defaults to h2: gRPC servers (the xDS server, Triton's gRPC port) expect ALPN to
    select HTTP/2, and some gRPC versions refuse a TLS handshake that selected none."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "sni": tls.server_name,
            "common_tls_context": {
                "alpn_protocols": list(alpn),
                "tls_certificates": [
                    {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
                ],
                # Without trusted_ca Envoy does not verify the upstream at all: both checks matter.
                "validation_context": {
                    "trusted_ca": {"filename": tls.ca_cert},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": tls.server_name}}
                    ],
                },
            },
        },
    }


def grpc_server_credentials(identity: Identity) -> grpc.ServerCredentials:
    """Credentials for a gRPC server that requires a client certificate signed by the CA."""
    identity.check()
    return grpc.ssl_server_credentials(
        [(identity.key.read_bytes(), identity.cert.read_bytes())],
        root_certificates=identity.ca_cert.read_bytes(),
        require_client_auth=True,
    )


def grpc_channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    """Credentials for a gRPC client presenting ``identity`` (tests and tools; Envoy uses
    ``upstream_transport_socket``).  Dial with the ``grpc.ssl_target_name_override`` option set
    to the server's ``Role.server_name`` when the address is an IP."""
    identity.check()
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca_cert.read_bytes(),
        private_key=identity.key.read_bytes(),
        certificate_chain=identity.cert.read_bytes(),
    )


@dataclass(frozen=True)
class ReplicaTls:
    """mTLS to replicas' gRPC ports for tools (the release comparator, the pre-flight profiler):
    they reach a replica as Envoy does, presenting Envoy's identity and checking the replica's
    name, so a platform whose replicas refuse plaintext can still be released to.  (A tool with
    the keys of this directory could already act as Envoy; it gets no power Envoy does not have.)"""

    certs: CertDir

    @property
    def client(self) -> Identity:
        return self.certs.identity(Role.ENVOY)

    @property
    def server(self) -> Identity:
        """What a Triton the tool starts (a candidate, a local stable) presents, as every replica does."""
        return self.certs.identity(Role.TRITON)

    def channel(self, target: str) -> grpc.Channel:
        return grpc.secure_channel(target, grpc_channel_credentials(self.client),
                                   [("grpc.ssl_target_name_override", Role.TRITON.server_name)])

    def tritonclient_options(self) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc.InferenceServerClient`` for this identity."""
        ident = self.client.check()
        return {"ssl": True, "root_certificates": str(ident.ca_cert), "private_key": str(ident.key),
                "certificate_chain": str(ident.cert),
                "channel_args": [("grpc.ssl_target_name_override", Role.TRITON.server_name)]}
