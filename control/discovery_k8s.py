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

What a replica really serves is its Triton's repository index, not the pool's configured model
list: with a ``RepositoryIndexProbe`` each serving replica's ``POST /v2/repository/index`` is read
in a thread of its own (every ``refresh_s``, a new replica at once), and a replica whose index
lacks one of its pool's models, or shows it not READY, is taken out of service (``ready`` false,
the reason in ``detail["repository_index"]``) until its index shows them all.  The loop routes a
pool's models over all of its replicas, so the granularity is the replica, not (replica, model).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
                 clock: Callable[[], float] = time.monotonic, index_probe: RepositoryIndexProbe | None = None) -> None:
        self.api = api
        self.index_probe = index_probe
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
        return self.index_probe.apply(current) if self.index_probe is not None else current

    def _listed(self) -> ReplicaSet | None:
        with self._lock:
            return self._current

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EndpointSliceDiscovery:
        self._thread.start()
        if self.index_probe is not None:
            self.index_probe.start(self._listed)
        return self

    def wait_synced(self, timeout_s: float) -> bool:
        return self._synced.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self.index_probe is not None:
            self.index_probe.stop()
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


# -- what each replica really serves: Triton's repository index ------------------------------------

def models_ready(index: Any) -> frozenset[str]:
    """The models a repository index shows READY.  ``index``: the JSON body of
    ``POST /v2/repository/index`` (KServe v2 repository extension) as Triton answers it, a list of
    ``{"name", "version", "state", "reason"}``; a model with several versions counts once any is."""
    if not isinstance(index, list):
        raise ValueError(f"repository index is not a JSON list: {str(index)[:120]}")
    return frozenset(str(e["name"]) for e in index
                     if isinstance(e, Mapping) and "name" in e and e.get("state") == "READY")


def gate_by_index(replicas: ReplicaSet, expected: Mapping[str, Sequence[str]],
                  served: Mapping[tuple[str, int], frozenset[str] | str]) -> ReplicaSet:
    """``replicas`` with every serving replica of a pool in ``expected`` whose index does not show
    all of the pool's models READY taken out of service (``ready`` false, why in
    ``detail["repository_index"]``).  ``served``: by (host, http_port), the models READY, or why
    they are unknown (not read yet, unreachable).  Pure."""
    by_pool: dict[str, tuple[Replica, ...]] = {}
    for pool, rs in replicas.by_pool.items():
        wanted = expected.get(pool)
        out = []
        for r in rs:
            if wanted is None or not r.serving:
                out.append(r)
                continue
            models = served.get((r.host, r.http_port), "repository index not read yet")
            if isinstance(models, str):
                why = models
            else:
                missing = [m for m in wanted if m not in models]
                why = f"not READY in its repository index: {', '.join(missing)}" if missing else ""
            out.append(replace(r, ready=False, detail={**r.detail, "repository_index": why}) if why else r)
        by_pool[pool] = tuple(out)
    return ReplicaSet(by_pool)


def fetch_repository_index(replica: Replica, timeout_s: float) -> Any:
    """``POST /v2/repository/index`` on the replica's HTTP port.  Host is the replica's Service
    (``Replica.authority``) when it has one: through Istio's sidecar only that Host gets mTLS."""
    request = urllib.request.Request(f"http://{_url_host(replica.host)}:{replica.http_port}/v2/repository/index",
                                     data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    if replica.authority:
        request.add_header("Host", f"{replica.authority}:{replica.http_port}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http to a pod IP
        return json.loads(response.read())


class RepositoryIndexProbe:
    """Reads the repository index of every serving replica of the pools in ``expected_models``
    (pool -> models its replicas must serve) in a thread of its own; ``apply`` gates a replica set
    by what was read (``gate_by_index``).  A replica is read when it first appears and then every
    ``refresh_s``; a failed read keeps the last answer (Triton's readiness probe already takes a
    dead replica out), and a replica never read is not routed."""

    def __init__(self, expected_models: Mapping[str, Sequence[str]], *, refresh_s: float = 10.0,
                 timeout_s: float = 2.0, fetch: Callable[[Replica, float], Any] = fetch_repository_index,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if refresh_s <= 0 or timeout_s <= 0:
            raise ValueError("RepositoryIndexProbe: refresh_s and timeout_s must be > 0")
        self.expected = {pool: tuple(models) for pool, models in expected_models.items()}
        self.refresh_s, self.timeout_s, self.fetch, self.clock = refresh_s, timeout_s, fetch, clock
        self._lock = threading.Lock()
        self._served: dict[tuple[str, int], frozenset[str] | str] = {}
        self._read_at: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reads = 0

    def apply(self, replicas: ReplicaSet) -> ReplicaSet:
        with self._lock:
            served = dict(self._served)
        return gate_by_index(replicas, self.expected, served)

    def refresh(self, replicas: ReplicaSet | None, now: float | None = None) -> None:
        """Read the indexes that are due; forget replicas no longer listed."""
        now = self.clock() if now is None else now
        due = [r for pool, rs in (replicas.by_pool.items() if replicas else ()) if pool in self.expected
               for r in rs if r.serving and now - self._read_at.get((r.host, r.http_port), -1e18) >= self.refresh_s]
        results: dict[tuple[str, int], frozenset[str] | str] = {}
        for r in due:
            key = (r.host, r.http_port)
            try:
                results[key] = models_ready(self.fetch(r, self.timeout_s))
            except Exception as e:  # noqa: BLE001 - any failure to read is reported the same way
                log.info("repository index of %s:%d: %s", r.host, r.http_port, e)
                if not isinstance(self._served.get(key, ""), frozenset):
                    results[key] = f"repository index unreadable: {e}"
            self._read_at[key] = now
            self.reads += 1
        listed = {(r.host, r.http_port) for rs in (replicas.by_pool.values() if replicas else ()) for r in rs}
        with self._lock:
            self._served.update(results)
            for key in set(self._served) - listed:
                del self._served[key]
        for key in set(self._read_at) - listed:
            del self._read_at[key]

    def start(self, source: Callable[[], ReplicaSet | None], tick_s: float = 0.2) -> RepositoryIndexProbe:
        def run() -> None:
            while not self._stop.wait(tick_s):
                self.refresh(source())

        self._thread = threading.Thread(target=run, name="repository-index", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)
