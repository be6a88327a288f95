"""One immutable snapshot of everything the data plane should run, and the function that builds it.

Like go-control-plane's ``Snapshot``: the control loop builds a value from its inputs with pure
functions, the value checks itself (``consistent()``) and only then is handed to the ADS server,
which publishes it as a unit.  ``version`` is a hash of the content, so rebuilding from unchanged
inputs yields the same version and nothing is pushed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from google.protobuf.message import Message

from xds_server import protos
from xds_server.clusters import mirror_clusters, model_clusters
from xds_server.inputs import CandidatePool, DataPlaneSettings, MirrorTarget, PoolEndpoints, RouteWeights, VersionSplit
from xds_server.listeners import api_listener, envoy_listeners
from xds_server.naming import GRPC_ROUTES, HTTP_ROUTES, proxyless_route_name
from xds_server.routes import proxyless_route_configuration, route_configuration


class InconsistentSnapshotError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("refusing to publish an inconsistent snapshot:\n  " + "\n  ".join(problems))
        self.problems = problems


def _digest(messages: Iterable[tuple[str, Message]]) -> str:
    h = hashlib.sha256()
    for name, message in messages:
        h.update(name.encode())
        h.update(b"\0")
        h.update(message.SerializeToString(deterministic=True))
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """Resources by type URL, then by name.  Treat the messages as read-only.

    ``api_listeners``: names of listeners for proxyless gRPC, answered only when asked for by name
    (a wildcard LDS request, which is what Envoy sends, must not get them: Envoy would reject them).
    The inputs are kept for ``/status`` and debugging; they do not affect equality of content.
    """

    version: str
    resources: Mapping[str, Mapping[str, Message]]
    api_listeners: frozenset[str] = frozenset()
    pools: tuple[PoolEndpoints, ...] = ()
    routes: tuple[RouteWeights, ...] = ()
    settings: DataPlaneSettings = field(default_factory=DataPlaneSettings)
    splits: tuple[VersionSplit, ...] = ()
    candidates: tuple[CandidatePool, ...] = ()
    mirrors: tuple[MirrorTarget, ...] = ()

    @classmethod
    def from_resources(
        cls, resources: Mapping[str, Iterable[Message]], *, api_listeners: Iterable[str] = (), **inputs: Any
    ) -> Snapshot:
        by_type: dict[str, Mapping[str, Message]] = {}
        for type_url in protos.PUSH_ORDER:
            named = {_name_of(type_url, m): m for m in resources.get(type_url, ())}
            by_type[type_url] = MappingProxyType(dict(sorted(named.items())))
        everything = [(f"{t}/{n}", m) for t in protos.PUSH_ORDER for n, m in by_type[t].items()]
        return cls(
            version=_digest(everything),
            resources=MappingProxyType(by_type),
            api_listeners=frozenset(api_listeners),
            **inputs,
        )

    def select(self, type_url: str, names: Iterable[str] | None = None) -> dict[str, Message]:
        """What a state-of-the-world answer holds: everything for a wildcard subscription
        (``names=None``; proxyless listeners excluded), else exactly the named ones that exist
        (an empty list: nothing, the client unsubscribed from all)."""
        of_type = self.resources.get(type_url, {})
        if names is None:
            return {n: m for n, m in of_type.items() if not (type_url == protos.LISTENER and n in self.api_listeners)}
        wanted = set(names)
        return {n: m for n, m in of_type.items() if n in wanted}

    def summary(self) -> dict[str, Any]:
        """What this snapshot routes, for ``/status``: pools with replicas, weights and reasons."""
        return {
            "version": self.version,
            "pools": {
                p.pool: {
                    "accelerator": p.accelerator,
                    "emulated": p.emulated,
                    "models": list(p.models),
                    "replicas": [f"{r.host}:{r.http_port}/{r.grpc_port}" for r in p.replicas],
                }
                for p in self.pools
            },
            "routes": {
                f"{r.model}/{r.tier}": {"weights": dict(r.weights), "reasons": {p.pool: str(p.reason) for p in r.pools}} for r in self.routes
            },
            "default_tier": self.settings.default_tier,
        }

    def consistent(self) -> list[str]:
        """Problems that would make Envoy reject the config or route a request wrongly; [] if none."""
        problems: list[str] = []
        clusters = self.resources.get(protos.CLUSTER, {})
        assignments = self.resources.get(protos.ENDPOINT, {})
        route_configs = self.resources.get(protos.ROUTE, {})
        for name, cluster in clusters.items():
            if cluster.type == cluster.EDS:
                cla = assignments.get(name)
                if cla is None:
                    problems.append(f"cluster {name}: no load assignment")
                elif not any(locality.lb_endpoints for locality in cla.endpoints):
                    problems.append(f"cluster {name}: no endpoints")
        for name in assignments:
            if name not in clusters:
                problems.append(f"load assignment {name}: no such cluster")
        for name, listener in self.resources.get(protos.LISTENER, {}).items():
            for route_name in _route_names(listener):
                if route_name not in route_configs:
                    problems.append(f"listener {name}: route configuration {route_name} does not exist")
        for name, config in route_configs.items():
            for vhost in config.virtual_hosts:
                for route in vhost.routes:
                    if not route.HasField("route"):
                        continue
                    where = f"route configuration {name}, route {route.name or '?'}"
                    action = route.route
                    if action.HasField("weighted_clusters"):
                        targets = [(c.name, c.weight.value) for c in action.weighted_clusters.clusters]
                        if sum(w for _, w in targets) == 0:
                            problems.append(f"{where}: all weights are zero")
                    else:
                        targets = [(action.cluster, 1)]
                    for cluster_name, _ in targets:
                        if cluster_name not in clusters:
                            problems.append(f"{where}: cluster {cluster_name} does not exist")
        problems.extend(_input_problems(self.pools, self.routes, self.settings))
        problems.extend(_release_problems(self.routes, self.splits, self.candidates))
        return problems


def _name_of(type_url: str, message: Message) -> str:
    return message.cluster_name if type_url == protos.ENDPOINT else message.name  # type: ignore[attr-defined]


def _route_names(listener: listener_pb2.Listener) -> list[str]:
    hcms = []
    if listener.HasField("api_listener"):
        hcms.append(listener.api_listener.api_listener)
    for chain in listener.filter_chains:
        hcms.extend(f.typed_config for f in chain.filters if f.HasField("typed_config"))
    names = []
    for packed in hcms:
        hcm = http_connection_manager_pb2.HttpConnectionManager()
        if packed.Unpack(hcm) and hcm.HasField("rds"):
            names.append(hcm.rds.route_config_name)
    return names


def _input_problems(
    pools: tuple[PoolEndpoints, ...], routes: tuple[RouteWeights, ...], settings: DataPlaneSettings
) -> list[str]:
    """Decisions that would build valid Envoy config yet route wrongly (e.g. silently default)."""
    problems = []
    served = {model: [p.pool for p in pools if model in p.models] for p in pools for model in p.models}
    have = {(r.model, r.tier) for r in routes}
    for r in routes:
        if r.tier not in settings.tiers:
            problems.append(f"route {r.model}/{r.tier}: unknown tier")
        if r.model not in served:
            problems.append(f"route {r.model}/{r.tier}: no pool serves {r.model}")
            continue
        if r.total != settings.total_weight:
            problems.append(f"route {r.model}/{r.tier}: weights sum to {r.total}, not {settings.total_weight}")
        for pool, weight in r.weights:
            if weight and pool not in served[r.model]:
                problems.append(f"route {r.model}/{r.tier}: pool {pool} does not serve {r.model}")
    for model in sorted(served):
        if any(m == model for m, _ in have):
            for tier in settings.tiers:
                if (model, tier) not in have:
                    problems.append(f"model {model}: no route for tier {tier} (it would fall to the default silently)")
    return problems


def _release_problems(routes: tuple[RouteWeights, ...], splits: tuple[VersionSplit, ...],
                      candidates: tuple[CandidatePool, ...]) -> list[str]:
    """A release split that would send traffic nowhere, or to replicas that do not exist."""
    problems = []
    have = {r.key for r in routes}
    running = {(c.model, c.pool, c.version) for c in candidates if c.replicas}
    for s in splits:
        if s.key not in have:
            problems.append(f"release split {s.key}: no such route")
        for pool in s.candidate_pools if s.candidate_bp else ():
            if (s.key.model, pool, s.candidate_version) not in running:
                problems.append(f"release split {s.key}: no candidate replica of version {s.candidate_version} on {pool}")
    return problems


def build_snapshot(
    pools: Iterable[PoolEndpoints], routes: Iterable[RouteWeights], settings: DataPlaneSettings | None = None,
    *, splits: Iterable[VersionSplit] = (), candidates: Iterable[CandidatePool] = (),
    mirrors: Iterable[MirrorTarget] = (), models: Iterable[str] = (),
) -> Snapshot:
    """Build every resource for Envoy and for proxyless clients.  Pure: same inputs, same version.

    ``models``: every model the fleet serves, whether or not a pool in ``pools`` has a replica of
    it now.  A model known (from ``models`` or a pool) but without routes gets 503 / UNAVAILABLE with
    a retry hint; any other model 404 / NOT_FOUND.  Call ``snapshot.consistent()`` (the server does,
    before publishing) to see problems.
    """
    settings = settings or DataPlaneSettings()
    pools = tuple(sorted(pools, key=lambda p: p.pool))
    known_models = tuple(sorted(set(models)))
    routes = tuple(sorted(routes, key=lambda r: (r.model, r.tier)))
    # A release: candidate clusters beside the stable ones, and each route's share (docs/releases.md).
    split_list = tuple(sorted(splits, key=lambda s: s.key))
    by_key = {s.key: s for s in split_list}
    candidate_pools = tuple(sorted(candidates, key=lambda c: (c.model, c.pool, c.version)))
    clusters, assignments = model_clusters(pools=pools, settings=settings, candidates=candidate_pools)
    mirror_list = tuple(sorted(mirrors, key=lambda m: m.model))
    clusters.extend(mirror_clusters(mirror_list, settings))
    mirrored = frozenset((m.model, proto) for m in mirror_list for proto in ("http", "grpc")
                         if proto == "http" or m.grpc_port is not None)
    listeners = envoy_listeners(settings)
    route_configs = [
        route_configuration(name=HTTP_ROUTES, proto="http", routes=routes, pools=pools, settings=settings, splits=by_key,
                            mirrored=mirrored, models=known_models),
        route_configuration(name=GRPC_ROUTES, proto="grpc", routes=routes, pools=pools, settings=settings, splits=by_key,
                            mirrored=mirrored, models=known_models),
    ]
    api_listener_names = []
    if settings.proxyless_listener_prefix is not None:
        for model in sorted({r.model for r in routes}):
            listener_name = f"{settings.proxyless_listener_prefix}{model}"
            route_name = proxyless_route_name(listener_name)
            listeners.append(api_listener(name=listener_name, route_name=route_name))
            route_configs.append(
                proxyless_route_configuration(
                    name=route_name, model=model, routes=routes, pools=pools, settings=settings, splits=by_key
                )
            )
            api_listener_names.append(listener_name)
    as_dicts = {
        protos.CLUSTER: clusters,
        protos.ENDPOINT: assignments,
        protos.LISTENER: listeners,
        protos.ROUTE: route_configs,
    }
    resources = {t: [protos.to_message(t, d) for d in ds] for t, ds in as_dicts.items()}
    return Snapshot.from_resources(
        resources, api_listeners=api_listener_names, pools=pools, routes=routes, settings=settings,
        splits=split_list, candidates=candidate_pools, mirrors=mirror_list,
    )


def even_routes(pools: Iterable[PoolEndpoints], settings: DataPlaneSettings | None = None) -> list[RouteWeights]:
    """Equal integer weights (summing to ``settings.total_weight``) over the pools serving each model, for every tier:
    a safe start before the policy's first decision, and handy in tests."""
    settings = settings or DataPlaneSettings()
    pools = sorted(pools, key=lambda p: p.pool)
    models = sorted({m for p in pools for m in p.models})
    routes: list[RouteWeights] = []
    for model in models:
        serving = [p.pool for p in pools if model in p.models]
        share, extra = divmod(settings.total_weight, len(serving))
        weights = tuple((pool, share + (1 if i < extra else 0)) for i, pool in enumerate(serving))
        routes.extend(RouteWeights.of(model, tier, weights) for tier in settings.tiers)
    return routes
