"""A Kubernetes API server for EndpointSlices only, on 127.0.0.1: the list/watch protocol as the
API reference and "Efficient detection of changes" (kubernetes.io/docs/reference/using-api/api-concepts)
describe it, so the real ``kubernetes`` client can be tested against something other than itself.

* ``GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=k=v,...``: an
  ``EndpointSliceList`` whose ``metadata.resourceVersion`` is the store's version now.
* ``...&watch=true&resourceVersion=N[&timeoutSeconds=S][&allowWatchBookmarks=true]``: a chunked
  stream of JSON lines ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}``, every
  change after N first, then changes as they happen until ``timeoutSeconds``; with bookmarks the
  stream ends with a ``BOOKMARK`` carrying the version reached.  A version older than the last
  compaction gets one ``ERROR`` event holding a ``Status`` with ``code: 410, reason: Expired``
  ("too old resource version"), as the real server sends it inside a 200 watch response.
* Every change bumps one global resourceVersion, which is written into the object's metadata.

Leases (coordination.k8s.io/v1) and ConfigMaps (v1) are plain objects: GET by name, POST
(409 AlreadyExists), PUT (409 Conflict unless ``metadata.resourceVersion`` is the stored one).

Knobs for tests: ``compact()`` (forget history: the next watch from an old version gets 410),
``break_watches()`` (close every open stream: a lost connection), ``hold_events`` (open streams
deliver nothing: changes pile up unseen), ``fail_next_list`` (a 500), ``unavailable`` (every
request a 503).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/discovery.k8s.io/v1/namespaces/"


def endpoint_slice(name: str, *, pool: str, endpoints: list[dict[str, Any]], namespace: str = "inference",
                   service: str | None = None, ports: Mapping[str, int] | None = None) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it for our headless Services."""
    ports = ports or {"http": 8000, "grpc": 8001, "http-metrics": 8002}
    service = service or f"triton-{pool}"
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "generateName": f"{service}-",
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                                "app.kubernetes.io/name": "triton", "inference.platform/pool": pool},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                          "uid": f"uid-{service}", "controller": True, "blockOwnerDeletion": True}]},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports.items()],
    }


def pod_endpoint(ip: str, pod: str, *, ready: bool | None = True, serving: bool | None = None,
                 terminating: bool | None = None, zone: str = "us-east-1a") -> dict[str, Any]:
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving if serving is not None else ready),
                                    ("terminating", terminating if terminating is not None else False))
                  if v is not None}
    return {"addresses": [ip], "conditions": conditions, "nodeName": f"node-{zone}", "zone": zone,
            "targetRef": {"kind": "Pod", "namespace": "inference", "name": pod, "uid": f"uid-{pod}"}}


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        else:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


class FakeApiServer:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 1
        self._compacted_at = 0
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._log: list[tuple[int, str, dict[str, Any]]] = []  # (version, type, object)
        self._epoch = 0  # bumped by break_watches
        # Plain objects with get/create/replace (Leases, ConfigMaps), optimistic concurrency on
        # metadata.resourceVersion as the API server enforces it: a stale replace is 409 Conflict.
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.unavailable = False  # every request answers 503 (an API server away)
        self.fail_next_list = False
        self.hold_events = False  # open watches deliver nothing while set (a partitioned watch)
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-apiserver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.break_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- changes -------------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> int:
        """Create or replace an object (ADDED or MODIFIED); returns the new resourceVersion."""
        obj = copy.deepcopy(obj)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._cond:
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
            kind = "MODIFIED" if key in self._objects else "ADDED"
            self._objects[key] = obj
            self._log.append((self._version, kind, obj))
            self._cond.notify_all()
            return self._version

    def delete(self, namespace: str, name: str) -> int:
        with self._cond:
            obj = self._objects.pop((namespace, name))
            self._version += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._version)}}
            self._log.append((self._version, "DELETED", obj))
            self._cond.notify_all()
            return self._version

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older versions now answer 410."""
        with self._cond:
            self._compacted_at = self._version
            self._log.clear()

    def break_watches(self) -> None:
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    # -- protocol --------------------------------------------------------------------------------
    def _list(self, namespace: str, selector: str) -> dict[str, Any]:
        with self._cond:
            items = [copy.deepcopy(o) for (ns, _), o in sorted(self._objects.items())
                     if ns == namespace and _matches(o["metadata"].get("labels", {}), selector)]
            return {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"resourceVersion": str(self._version)}, "items": items}

    def _events_after(self, version: int, namespace: str, selector: str) -> list[tuple[int, str, dict[str, Any]]]:
        return [(v, t, o) for v, t, o in self._log if v > version and o["metadata"]["namespace"] == namespace
                and _matches(o["metadata"].get("labels", {}), selector)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def _json(self, code: int, body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, event: Mapping[str, Any]) -> None:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _status(self, code: int, reason: str, message: str) -> None:
                self._json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "reason": reason, "message": message, "code": code})

            def _object_route(self) -> tuple[str, str, str | None] | None:
                m = re.fullmatch(r"/(?:api/v1|apis/coordination\.k8s\.io/v1)/namespaces/([^/]+)/(leases|configmaps)(?:/([^/]+))?",
                                 urlparse(self.path).path)
                return (m.group(2), m.group(1), m.group(3)) if m else None

            def _body(self) -> dict[str, Any]:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

            def do_POST(self) -> None:  # noqa: N802
                server.requests.append(f"POST {self.path}")
                route, body = self._object_route(), self._body()
                if server.unavailable or route is None:
                    self._status(503 if server.unavailable else 404, "ServiceUnavailable", "no")
                    return
                resource, namespace, _ = route
                name = body["metadata"]["name"]
                with server._cond:
                    if (resource, namespace, name) in server.objects:
                        self._status(409, "AlreadyExists", f"{resource} {name!r} already exists")
                        return
                    server._version += 1
                    body["metadata"].update(namespace=namespace, resourceVersion=str(server._version))
                    server.objects[(resource, namespace, name)] = body
                self._json(201, body)

            def do_PUT(self) -> None:  # noqa: N802
                server.requests.append(f"PUT {self.path}")
                route, body = self._object_route(), self._body()
                if server.unavailable or route is None or route[2] is None:
                    self._status(503 if server.unavailable else 404, "ServiceUnavailable", "no")
                    return
                resource, namespace, name = route
                with server._cond:
                    current = server.objects.get((resource, namespace, name))
                    if current is None:
                        self._status(404, "NotFound", f"{resource} {name!r} not found")
                        return
                    if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                        self._status(409, "Conflict", "the object has been modified; please apply your changes "
                                                      "to the latest version and try again")
                        return
                    server._version += 1
                    body["metadata"].update(namespace=namespace, resourceVersion=str(server._version))
                    server.objects[(resource, namespace, name)] = body
                self._json(200, body)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                server.requests.append(self.path)
                if server.unavailable:
                    self._status(503, "ServiceUnavailable", "the API server is away")
                    return
                route = self._object_route()
                if route is not None and route[2] is not None:
                    with server._cond:
                        found = copy.deepcopy(server.objects.get(route))  # type: ignore[arg-type]
                    if found is None:
                        self._status(404, "NotFound", f"{route[0]} {route[2]!r} not found")
                    else:
                        self._json(200, found)
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                parts = url.path[len(PREFIX):].split("/") if url.path.startswith(PREFIX) else []
                if len(parts) != 2 or parts[1] != "endpointslices":
                    self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404, "message": f"no route {url.path}"})
                    return
                namespace, selector = parts[0], query.get("labelSelector", "")
                if query.get("watch") not in ("true", "1"):
                    if server.fail_next_list:
                        server.fail_next_list = False
                        self._json(500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "InternalError", "code": 500, "message": "etcd unavailable"})
                        return
                    self._json(200, server._list(namespace, selector))
                    return
                self._watch(namespace, selector, int(query.get("resourceVersion") or 0),
                            float(query.get("timeoutSeconds") or 1800), query.get("allowWatchBookmarks") == "true")

            def _watch(self, namespace: str, selector: str, since: int, timeout_s: float, bookmarks: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    with server._cond:
                        epoch = server._epoch
                        if since < server._compacted_at:
                            expired = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": f"too old resource version: {since} ({server._compacted_at})",
                                       "reason": "Expired", "code": 410}
                            events = [{"type": "ERROR", "object": expired}]
                            done = True
                        else:
                            events, done = [], False
                    for event in events:
                        self._chunk(event)
                    position = since
                    ends_at = time.monotonic() + timeout_s
                    timed_out, reached = False, since
                    while not done:
                        with server._cond:
                            pending = [] if server.hold_events else server._events_after(position, namespace, selector)
                            if not pending:
                                server._cond.wait(min(0.5, max(0.0, ends_at - time.monotonic())))
                                if server._epoch != epoch:
                                    break
                                if time.monotonic() >= ends_at and not server._events_after(position, namespace, selector):
                                    timed_out, reached = True, server._version
                                    break
                                continue
                        for version, kind, obj in pending:
                            self._chunk({"type": kind, "object": obj})
                            position = version
                    if bookmarks and timed_out:
                        self._chunk({"type": "BOOKMARK", "object": {
                            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                            "metadata": {"resourceVersion": str(reached)}}})
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        return Handler
