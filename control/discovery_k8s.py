"""Replica discovery from Kubernetes EndpointSlices (``control.ports.ReplicaDiscovery``).

The Triton pools sit behind headless Services (``k8s/base/triton/services.yaml``); the
EndpointSlice controller keeps one or more slices per Service listing every pod's IP, ports and
conditions, and copies the Service's labels onto them, so one label selector finds every pool's
slices and the pool label names the pool.  The adapter lists those slices once, then watches
from the list's ``resourceVersion`` (the list/watch protocol of the Kubernetes API) in a thread
of its own, so ``read()`` is a lock-and-copy and never waits for the API server.

The one decision that shapes it: the conditions of an endpoint are taken as the API reference
defines them, not re-derived from pod phases.

* ``serving`` (nil means ``ready``'s value, nil ``ready`` means true) -> ``Replica.ready``: the
  pod passes its readiness probe (Triton's ``/v2/health/ready`` with ``--strict-readiness``).
* ``terminating`` (nil means false) -> ``Replica.terminating``: the pod got its deletion
  timestamp.  The loop drains it (weight 0, out of EDS) while Triton still serves during its
  ``preStop`` sleep, which is what makes a scale-in lose no request.
* An endpoint neither serving nor terminating is *starting*: counted toward capacity, never
  routed to.

A watch that the server ends (its ``timeoutSeconds``) resumes from the last resourceVersion
seen (bookmarks included); a ``410 Gone`` (the version was compacted away) relists from scratch
and replaces the whole cache, so slices deleted meanwhile disappear.  Any other failure backs
off and relists.  ``read()`` raises ``DiscoveryError`` until the first list succeeded and again
once the watch has been broken longer than ``stale_after_s``: the loop then keeps the last
routes instead of routing on a replica set nobody can vouch for.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from control.ports import DiscoveryError, Replica, ReplicaSet

log = logging.getLogger(__name__)

GONE = 410
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
POD_ADDRESS_TYPES = ("IPv4", "IPv6")


@dataclass(frozen=True)
class SliceSelection:
    """Which EndpointSlices are Triton pools, and how to read a replica from one.

    Defaults match ``k8s/base/triton/`` (port names of the Services, labels of the pools)."""

    namespace: str = "inference"
    label_selector: str = "app.kubernetes.io/name=triton"
    pool_label: str = "inference.platform/pool"
    http_port_name: str = "http"
    grpc_port_name: str = "grpc"
    metrics_port_name: str = "http-metrics"
    metrics_path: str = "/metrics"
    # A replica's authority is its Service's name in the cluster's DNS domain
    # (<service>.<namespace>.svc.<cluster_domain>): Envoy sends it as Host so that Istio's sidecar
    # routes the request over mTLS (xds_server.inputs.Endpoint).  "" sends none.
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        for name in ("namespace", "label_selector", "pool_label", "http_port_name", "grpc_port_name",
                     "metrics_port_name"):
            if not getattr(self, name):
                raise ValueError(f"SliceSelection.{name} must not be empty")
        if not self.metrics_path.startswith("/"):
            raise ValueError(f"SliceSelection.metrics_path {self.metrics_path!r} must start with '/'")


def _condition(conditions: Mapping[str, Any], name: str, if_unknown: bool) -> bool:
    value = conditions.get(name)
    return if_unknown if value is None else bool(value)


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def replicas_from_slices(slices: Iterable[Mapping[str, Any]], selection: SliceSelection) -> tuple[ReplicaSet, list[str]]:
    """The replica set the slices describe, and why any slice or endpoint was left out.  Pure.

    ``slices`` are EndpointSlice objects as the API serves them (JSON, camelCase keys).  An address
    listed in two slices of a pool (the controller moves endpoints between slices) counts once,
    with the most recent slice's conditions winning only if it is at least as ready.
    """
    problems: list[str] = []
    by_pool: dict[str, dict[tuple[str, int], Replica]] = {}
    for item in sorted(slices, key=lambda s: str(s.get("metadata", {}).get("name", ""))):
        meta = item.get("metadata") or {}
        name = meta.get("name", "?")
        labels = meta.get("labels") or {}
        pool = labels.get(selection.pool_label)
        if not pool:
            problems.append(f"EndpointSlice {name}: no {selection.pool_label!r} label (is the Service labelled?)")
            continue
        if item.get("addressType") not in POD_ADDRESS_TYPES:
            problems.append(f"EndpointSlice {name}: addressType {item.get('addressType')!r} is not an IP family")
            continue
        ports = {p.get("name"): p.get("port") for p in item.get("ports") or [] if p.get("port")}
        wanted = (selection.http_port_name, selection.grpc_port_name, selection.metrics_port_name)
        missing = [n for n in wanted if n not in ports]
        if missing:
            if item.get("endpoints"):
                problems.append(f"EndpointSlice {name} (pool {pool}): no port named {', '.join(missing)}")
            continue
        http_port, grpc_port, metrics_port = (int(ports[n]) for n in wanted)
        service, namespace = labels.get(SERVICE_NAME_LABEL), meta.get("namespace") or selection.namespace
        authority = f"{service}.{namespace}.svc.{selection.cluster_domain}" if service and selection.cluster_domain else ""
        pool_replicas = by_pool.setdefault(pool, {})
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready_condition = _condition(conditions, "ready", True)
            serving = _condition(conditions, "serving", ready_condition)
            terminating = _condition(conditions, "terminating", False)
            target = endpoint.get("targetRef") or {}
            for ip in endpoint.get("addresses") or []:
                replica = Replica(
                    pool=pool,
                    host=ip,
                    http_port=http_port,
                    grpc_port=grpc_port,
                    metrics_url=f"http://{_url_host(ip)}:{metrics_port}{selection.metrics_path}",
                    ready=serving,
                    terminating=terminating,
                    detail={"pod": target.get("name"), "node": endpoint.get("nodeName"),
                            "zone": endpoint.get("zone"), "slice": name,
                            "service": labels.get(SERVICE_NAME_LABEL),
                            "ready": ready_condition, "serving": serving, "terminating": terminating},
                    authority=authority,
                )
                key = (ip, http_port)
                seen = pool_replicas.get(key)
                if seen is None or (replica.serving, replica.ready) >= (seen.serving, seen.ready):
                    pool_replicas[key] = replica
    replica_set = ReplicaSet({pool: tuple(rs[k] for k in sorted(rs)) for pool, rs in sorted(by_pool.items())})
    return replica_set, problems


@dataclass
class SliceCache:
    """The slices known now, by name, and the resourceVersion they are current at."""

    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_version: str | None = None

    def replace(self, items: Iterable[Mapping[str, Any]], resource_version: str) -> None:
        self.slices = {str(i["metadata"]["name"]): dict(i) for i in items}
        self.resource_version = resource_version

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED, BOOKMARK)."""
        meta = obj.get("metadata") or {}
        if event_type in ("ADDED", "MODIFIED"):
            self.slices[str(meta["name"])] = dict(obj)
        elif event_type == "DELETED":
            self.slices.pop(str(meta.get("name")), None)
        elif event_type != "BOOKMARK":
            raise ValueError(f"unexpected watch event type {event_type!r}")
        if meta.get("resourceVersion"):
            self.resource_version = str(meta["resourceVersion"])


def discovery_api(*, host: str | None = None, kubeconfig: str | None = None) -> Any:
    """A ``DiscoveryV1Api``: in a pod its service account (``host`` and ``kubeconfig`` None),
    else the kubeconfig's current context, or a plain ``host`` URL (tests, ``kubectl proxy``)."""
    from kubernetes import client, config

    if host is not None:
        configuration = client.Configuration()
        configuration.host = host
        return client.DiscoveryV1Api(client.ApiClient(configuration))
    if kubeconfig is None:
        try:
            config.load_incluster_config()
        except config.ConfigException as e:
            raise DiscoveryError(f"not in a pod and no --kubeconfig given: {e}") from None
    else:
        config.load_kube_config(config_file=kubeconfig)
    return client.DiscoveryV1Api()


class EndpointSliceDiscovery:
    """List and watch the pools' EndpointSlices in a background thread; ``read()`` never blocks."""

    def __init__(self, api: Any, selection: SliceSelection | None = None, *, watch_timeout_s: int = 240,
                 stale_after_s: float = 60.0, max_backoff_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.selection = selection or SliceSelection()
        self.watch_timeout_s = watch_timeout_s
        self.stale_after_s = stale_after_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._cache = SliceCache()
        self._lock = threading.Lock()
        self._current: ReplicaSet | None = None
        self._problems: list[str] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._healthy_since: float | None = None
        self._broken_since: float | None = None
        self._last_error: str | None = None
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="endpointslice-watch", daemon=True)
        self.relists = 0
        self.resyncs_after_gone = 0
        self.events = 0

    # -- the port ----------------------------------------------------------------------------
    def read(self) -> ReplicaSet:
        with self._lock:
            current, broken_since, error = self._current, self._broken_since, self._last_error
        if current is None:
            raise DiscoveryError(f"EndpointSlices not listed yet{f' ({error})' if error else ''}")
        if broken_since is not None and self.clock() - broken_since > self.stale_after_s:
            raise DiscoveryError(f"EndpointSlice watch broken for {self.clock() - broken_since:.0f}s: {error}")
        return current

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EndpointSliceDiscovery:
        self._thread.start()
        return self

    def wait_synced(self, timeout_s: float) -> bool:
        return self._synced.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 5.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            watch = self._watch
            # A watch blocks reading the next event: close its response to unblock it (the
            # request may still be on its way, hence the retries).
            response = getattr(watch, "_resp", None) if watch is not None else None
            if response is not None:
                watch.stop()
                try:
                    response.shutdown()
                except Exception:  # noqa: BLE001 - best effort: the thread is a daemon anyway
                    pass
            self._thread.join(timeout=0.05)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"namespace": self.selection.namespace, "label_selector": self.selection.label_selector,
                    "synced": self._current is not None, "resource_version": self._cache.resource_version,
                    "slices": len(self._cache.slices), "relists": self.relists,
                    "resyncs_after_gone": self.resyncs_after_gone, "events": self.events,
                    "last_error": self._last_error, "problems": list(self._problems)}

    # -- list and watch ----------------------------------------------------------------------
    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        backoff_s = 0.2
        while not self._stop.is_set():
            try:
                self._relist()
                backoff_s = 0.2
                while not self._stop.is_set():
                    self._watch_once()
            except ApiException as e:
                if e.status == GONE:
                    self.resyncs_after_gone += 1
                    log.info("EndpointSlice watch: resourceVersion %s expired (410), relisting",
                             self._cache.resource_version)
                    continue  # relist at once: the cache is only stale, the server is fine
                self._failed(f"API {e.status}: {e.reason}")
            except Exception as e:  # connection refused, reset, timeouts, bad JSON
                if self._stop.is_set():
                    break
                self._failed(f"{type(e).__name__}: {e}")
            if self._stop.wait(backoff_s):
                break
            backoff_s = min(backoff_s * 2, self.max_backoff_s)

    def _failed(self, error: str) -> None:
        log.warning("EndpointSlice discovery: %s", error)
        with self._lock:
            self._last_error = error
            if self._broken_since is None:
                self._broken_since = self.clock()

    def _relist(self) -> None:
        response = self.api.list_namespaced_endpoint_slice(
            self.selection.namespace, label_selector=self.selection.label_selector, _preload_content=False,
            _request_timeout=(10, 30))
        body = json.loads(response.data)
        items = body.get("items") or []
        resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if not resource_version:
            raise ValueError("EndpointSlice list without metadata.resourceVersion")
        with self._lock:
            self._cache.replace(items, resource_version)
            self.relists += 1
            self._publish_locked()
        self._synced.set()

    def _watch_once(self) -> None:
        """One watch request from the cache's resourceVersion until the server ends it."""
        from kubernetes import watch

        self._watch = watch.Watch()
        try:
            for event in self._watch.stream(
                    self.api.list_namespaced_endpoint_slice, self.selection.namespace,
                    label_selector=self.selection.label_selector,
                    resource_version=self._cache.resource_version, allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                    # A connection that dies silently would leave the watch waiting forever on a
                    # stale set: give up reading a little after the server's own timeout.
                    _request_timeout=(10, self.watch_timeout_s + 30)):
                with self._lock:
                    self._cache.apply(event["type"], event["raw_object"])
                    self.events += 1
                    self._publish_locked()
                if self._stop.is_set():
                    return
        finally:
            self._watch = None

    def _publish_locked(self) -> None:
        replica_set, problems = replicas_from_slices(self._cache.slices.values(), self.selection)
        if problems != self._problems:
            for problem in problems:
                log.warning("EndpointSlice discovery: %s", problem)
        self._current, self._problems = replica_set, problems
        self._broken_since, self._last_error = None, None
