"""Signing keys and tokens for the edge's JWT authentication, made locally with ``cryptography``.

The edge (Envoy's jwt_authn) holds only the public half, as a JWKS document; whoever issues tokens
keeps the private key.  RS256 because Envoy verifies RSA signatures faster than ECDSA ones, and a
token is verified on every request that misses jwt_authn's cache.  ``mint`` exists for local
development and tests (a real deployment's identity provider issues the tokens): it writes the
same compact JWS any library would, so no JWT package is needed.

    python -m xds_server.edge_tokens keygen --out build/edge          # private.pem + jwks.json
    python -m xds_server.edge_tokens mint --key build/edge/private.pem --sub alice --issuer ...
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64url(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_id(key: rsa.RSAPrivateKey) -> str:
    numbers = key.public_key().public_numbers()
    return hashlib.sha256(f"{numbers.n}:{numbers.e}".encode()).hexdigest()[:16]


def jwks(*keys: rsa.RSAPrivateKey) -> str:
    """The public JWKS document (JSON text) for ``keys``: what the edge is configured with."""
    out = []
    for key in keys:
        numbers = key.public_key().public_numbers()
        out.append({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": key_id(key),
                    "n": _int_b64url(numbers.n), "e": _int_b64url(numbers.e)})
    return json.dumps({"keys": out}, indent=1)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    return key


def mint(key: rsa.RSAPrivateKey, *, subject: str, issuer: str, audience: str, ttl_s: int = 3600,
         now: float | None = None, claims: dict[str, Any] | None = None) -> str:
    """A compact RS256 JWS with ``sub``, ``iss``, ``aud``, ``iat`` and ``exp``."""
    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", "kid": key_id(key)}
    payload = {"sub": subject, "iss": issuer, "aud": audience, "iat": issued, "exp": issued + ttl_s, **(claims or {})}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xds_server.edge_tokens", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write private.pem and jwks.json (public) into --out")
    k.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("mint", help="print a signed token")
    m.add_argument("--key", type=Path, required=True, help="private.pem from keygen")
    m.add_argument("--sub", required=True, help="the identity (as listed in the edge config)")
    m.add_argument("--issuer", required=True)
    m.add_argument("--audience", required=True)
    m.add_argument("--ttl-s", type=int, default=3600)
    args = ap.parse_args(argv)
    if args.command == "keygen":
        args.out.mkdir(parents=True, exist_ok=True)
        key = new_key()
        (args.out / "private.pem").write_bytes(private_pem(key))
        (args.out / "private.pem").chmod(0o600)
        (args.out / "jwks.json").write_text(jwks(key))
        print(f"wrote {args.out / 'private.pem'} (keep it) and {args.out / 'jwks.json'} (give it to the edge)")
    else:
        print(mint(load_private_key(args.key), subject=args.sub, issuer=args.issuer, audience=args.audience,
                   ttl_s=args.ttl_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
