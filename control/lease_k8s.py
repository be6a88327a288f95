"""The control plane's shared state in a cluster: a Kubernetes Lease for leadership
(``control.leadership.LeaderLease``) and a ConfigMap for the record (``control.ports.StateStore``).

Lease, as client-go's leader election uses ``coordination.k8s.io/v1`` Leases: the holder renews
``renewTime`` every tick; another server takes the lease over only once ``renewTime +
leaseDurationSeconds`` has passed; every write is a replace carrying the ``resourceVersion`` read,
so of two servers racing for an expired lease the API server lets exactly one win (the other gets
409 Conflict).  A leader that cannot renew stops deciding once its own last renewal is older than
the lease duration, before anyone else may take over (clocks are assumed roughly in step, as
client-go assumes; the renew deadline is a third of the duration shorter to leave room).

Record: one ConfigMap key holding the JSON record (``ControlRecord.to_json``); only the leader
writes it, so no merge is needed; a ConfigMap holds at most 1 MiB, which the record is far from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

RECORD_KEY = "record.json"


def _micro_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z" if "." in text
                             else "%Y-%m-%dT%H:%M:%S%z").timestamp()


def _read(call: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    """GET as JSON; None when the object does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        return json.loads(call(*args, _preload_content=False).data)  # type: ignore[no-any-return]
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _write(api: Any, method: str, path: str, body: Mapping[str, Any]) -> None:
    """POST/PUT a JSON body as written.  Not through the generated ``create_*``/``replace_*``: the
    client validates bodies into its models and re-serialises datetimes with ``isoformat()``,
    which drops the microseconds a Lease's MicroTime must carry (the API server parses
    ``2006-01-02T15:04:05.000000Z07:00`` exactly)."""
    from kubernetes.client.exceptions import ApiException

    client = api.api_client
    params = client.param_serialize(method=method, resource_path=path, body=dict(body), auth_settings=["BearerToken"],
                                    header_params={"Content-Type": "application/json", "Accept": "application/json"})
    response = client.call_api(*params)
    response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)


class KubernetesLease:
    def __init__(self, api: Any, *, namespace: str, name: str, identity: str, duration_s: int = 10,
                 clock: Callable[[], float] = time.time) -> None:
        if duration_s < 3:
            raise ValueError(f"lease duration {duration_s}s: at least 3 s (renewed every tick)")
        self.api = api  # kubernetes.client.CoordinationV1Api
        self.namespace, self.name, self.identity = namespace, name, identity
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.duration_s = duration_s
        self.clock = clock
        self._renewed_at: float | None = None
        self._holder: str | None = None
        self.last_error: str | None = None

    def hold(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        now = self.clock()
        try:
            held = self._try(now)
            self.last_error = None
        except (ApiException, OSError, ValueError) as e:  # API away: lead on only while surely unexpired
            self.last_error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            return self._renewed_at is not None and now - self._renewed_at < self.duration_s * 2 / 3
        if not held:
            self._renewed_at = None
        return held

    def _try(self, now: float) -> bool:
        from kubernetes.client.exceptions import ApiException

        lease = _read(self.api.read_namespaced_lease, self.name, self.namespace)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration_s,
                "renewTime": _micro_time(now)}
        try:
            if lease is None:
                spec.update(acquireTime=_micro_time(now), leaseTransitions=0)
                _write(self.api, "POST", self._collection, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec})
            else:
                current = lease.get("spec") or {}
                self._holder = current.get("holderIdentity")
                if self._holder != self.identity:
                    renewed = _parse_time(current.get("renewTime")) or 0.0
                    if now < renewed + float(current.get("leaseDurationSeconds") or self.duration_s):
                        return False  # held by another, unexpired
                    spec.update(acquireTime=_micro_time(now),
                                leaseTransitions=int(current.get("leaseTransitions") or 0) + 1)
                else:
                    spec.update(acquireTime=current.get("acquireTime") or _micro_time(now),
                                leaseTransitions=int(current.get("leaseTransitions") or 0))
                _write(self.api, "PUT", f"{self._collection}/{self.name}", {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": spec})
        except ApiException as e:
            if e.status in (409,):  # another server wrote first: it leads
                return False
            raise
        self._renewed_at, self._holder = now, self.identity
        return True

    def holder(self) -> str | None:
        return self._holder

    def release(self) -> None:
        """Give the lease up at shutdown (renewTime in the past), so a follower need not wait it out."""
        from kubernetes.client.exceptions import ApiException

        if self._renewed_at is None:
            return
        try:
            lease = _read(self.api.read_namespaced_lease, self.name, self.namespace)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["renewTime"] = _micro_time(0.0)
                _write(self.api, "PUT", f"{self._collection}/{self.name}", lease)
        except ApiException:
            pass  # it expires by itself
        self._renewed_at = None


class ConfigMapStateStore:
    def __init__(self, api: Any, *, namespace: str, name: str) -> None:
        self.api = api  # kubernetes.client.CoreV1Api
        self.namespace, self.name = namespace, name

    def load(self) -> Mapping[str, Any] | None:
        configmap = _read(self.api.read_namespaced_config_map, self.name, self.namespace)
        text = ((configmap or {}).get("data") or {}).get(RECORD_KEY)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ConfigMap {self.namespace}/{self.name} key {RECORD_KEY}: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"ConfigMap {self.namespace}/{self.name} key {RECORD_KEY}: not a JSON object")
        return data

    def save(self, record: Mapping[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": self.name, "namespace": self.namespace},
                                "data": {RECORD_KEY: json.dumps(record, sort_keys=True)}}
        try:
            current = _read(self.api.read_namespaced_config_map, self.name, self.namespace)
            collection = f"/api/v1/namespaces/{self.namespace}/configmaps"
            if current is None:
                _write(self.api, "POST", collection, body)
            else:
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                _write(self.api, "PUT", f"{collection}/{self.name}", body)
        except ApiException as e:  # the loop treats OSError as "not saved, routes stand, retry"
            raise OSError(f"ConfigMap {self.namespace}/{self.name}: API {e.status} {e.reason}") from None


def cluster_apis(*, host: str | None = None, kubeconfig: str | None = None) -> tuple[Any, Any]:
    """(CoordinationV1Api, CoreV1Api) configured like ``control.discovery_k8s.discovery_api``."""
    from kubernetes import client

    from control.discovery_k8s import discovery_api

    api_client = discovery_api(host=host, kubeconfig=kubeconfig).api_client
    return client.CoordinationV1Api(api_client), client.CoreV1Api(api_client)
