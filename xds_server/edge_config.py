"""The edge configuration file (``edge.yaml``): the boundary where ``EdgeSettings`` are read.

Every error names the file and the field (``edge.yaml: auth.identities.alice.tiers: unknown tier
'platinum'; tiers are gold, silver, bronze``).  Model schemas are not in the file: the control
plane derives them from the model repository (``edge_validation.schemas_from_models``) and passes
them in, so the edge checks exactly what the models declare.  docs/edge.md shows a full file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from router_lib.config import ConfigError, _Reader, read_yaml
from xds_server.edge_settings import (
    ABOVE_ENTITLEMENT,
    AUTH_MODES,
    EdgeAuth,
    EdgeSettings,
    EdgeValidation,
    Identity,
    ModelSchema,
)

AUTH_KEYS = {"mode", "issuer", "audiences", "jwks_file", "identity_claim", "above_entitlement", "identities",
             "identity_header", "public_prefixes"}
VALIDATION_KEYS = {"enabled", "max_body_bytes", "max_request_headers_kb", "max_headers_count",
                   "map_upstream_client_errors"}


def _str_list(r: _Reader, key: str) -> tuple[str, ...]:
    items = r.list(key)
    if not all(isinstance(i, str) and i for i in items):
        raise ConfigError(r.path, f"{r.where}.{key}", f"must be a list of non-empty strings, got {items!r}")
    return tuple(items)


def _bool(r: _Reader, key: str, default: bool) -> bool:
    v = r.raw(key, default)
    if not isinstance(v, bool):
        raise ConfigError(r.path, f"{r.where}.{key}", f"must be true or false, got {v!r}")
    return v


def _identities(r: _Reader, tiers: tuple[str, ...]) -> tuple[Identity, ...]:
    table = r.mapping("identities")
    out = []
    for name in table:
        i = r.child("identities").child(name)
        i.unknown_keys({"tiers", "requests_per_second", "burst"})
        granted = _str_list(i, "tiers")
        unknown = [t for t in granted if t not in tiers]
        if unknown:
            raise ConfigError(r.path, f"{i.where}.tiers", f"unknown tier {unknown[0]!r}; tiers are {', '.join(tiers)}")
        rate = i.float("requests_per_second", positive=True, default=100.0)
        burst = i.int("burst", minimum=0, default=0)
        try:
            out.append(Identity(str(name), granted, rate, burst))
        except ValueError as e:
            raise ConfigError(r.path, i.where, str(e)) from None
    return tuple(out)


def _auth(r: _Reader, base: Path, tiers: tuple[str, ...]) -> EdgeAuth:
    r.unknown_keys(AUTH_KEYS)
    mode = r.enum("mode", str, list(AUTH_MODES), default="open")
    if mode == "open":
        return EdgeAuth()
    jwks_path = base / r.str("jwks_file")
    try:
        jwks = jwks_path.read_text()
        keys = json.loads(jwks).get("keys")
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(r.path, f"{r.where}.jwks_file", f"{jwks_path} is not a readable JWKS document: {e}") from None
    if not keys:
        raise ConfigError(r.path, f"{r.where}.jwks_file", f"{jwks_path} holds no keys")
    if any("d" in k for k in keys):
        raise ConfigError(r.path, f"{r.where}.jwks_file", f"{jwks_path} holds a private key: give the edge public keys only")
    kwargs: dict[str, Any] = {}
    if r.has("public_prefixes"):
        kwargs["public_prefixes"] = _str_list(r, "public_prefixes")
    if r.has("identity_header"):
        kwargs["identity_header"] = r.str("identity_header")
    try:
        return EdgeAuth(mode=mode, issuer=r.str("issuer"), audiences=_str_list(r, "audiences"), jwks=jwks,
                        identity_claim=r.str("identity_claim", default="sub"),
                        identities=_identities(r, tiers),
                        above_entitlement=r.enum("above_entitlement", str, list(ABOVE_ENTITLEMENT), default="deny"),
                        **kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(r.path, r.where, str(e)) from None


def _validation(r: _Reader, models: tuple[ModelSchema, ...]) -> EdgeValidation:
    r.unknown_keys(VALIDATION_KEYS)
    defaults = EdgeValidation()
    try:
        return EdgeValidation(
            enabled=_bool(r, "enabled", True), models=models,
            max_body_bytes=r.int("max_body_bytes", minimum=1, default=defaults.max_body_bytes),
            max_request_headers_kb=r.int("max_request_headers_kb", minimum=1, default=defaults.max_request_headers_kb),
            max_headers_count=r.int("max_headers_count", minimum=1, default=defaults.max_headers_count),
            map_upstream_client_errors=_bool(r, "map_upstream_client_errors", True))
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(r.path, r.where, str(e)) from None


def load_edge_config(path: Path | str, *, tiers: tuple[str, ...], models: tuple[ModelSchema, ...]) -> EdgeSettings:
    """``tiers``: the fleet's tiers (identities may only name those); ``models``: the schemas
    validation checks against.  A missing ``validation:`` block means validation on."""
    path = Path(path)
    root = _Reader(path, read_yaml(path))
    root.unknown_keys({"auth", "validation"})
    auth = _auth(root.child("auth"), path.parent, tiers) if root.has("auth") else EdgeAuth()
    validation = (_validation(root.child("validation"), models) if root.has("validation")
                  else EdgeValidation(enabled=True, models=models))
    return EdgeSettings(auth=auth, validation=validation)


def local_default(models: tuple[ModelSchema, ...]) -> EdgeSettings:
    """The local platform's edge without a file: open (no authentication), validation on."""
    return EdgeSettings(validation=EdgeValidation(enabled=True, models=models))


def edge_settings_for(path: Path | None, validate: bool, *, tiers: tuple[str, ...],
                      models: tuple[ModelSchema, ...]) -> EdgeSettings:
    """The control server's choice (``--edge-config`` / ``--edge-validate``): a file wins; else
    ``validate`` gives the open local default; else no edge filters at all (as before)."""
    if path is not None:
        return load_edge_config(path, tiers=tiers, models=models)
    return local_default(models) if validate else EdgeSettings()
