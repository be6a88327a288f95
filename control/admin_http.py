"""The control server's admin HTTP, on 127.0.0.1 only.

GET  /status            JSON: pools, health, weights per model and tier with the policy's reasons,
                        last push, ADS stream ACK state
GET  /metrics           Prometheus text (weights, decisions, push/ACK latency, NACKs, cost)
GET  /healthz           200 when a snapshot is published, discovery answers and some pool has a
                        serving replica; else 503 naming what is missing
GET  /readyz            200 once a snapshot is published (the pod may take ADS streams)
GET  /livez             200 while the process runs
POST /drain?pool=NAME   weight the pool to 0, publish, wait for ACKs (called before its Tritons stop)
POST /undrain?pool=NAME
POST /drain-replica?pool=NAME&http_port=N[&host=IP]
                        take one replica out of Envoy's endpoints, wait for ACKs (before scale-in)
POST /backlog           JSON {"source", "model", "tier", "rows_per_s"[, "ttl_s", "rows_waiting"]}: rows/s
                        queued work wants (``router_lib.backlog``); capacity plans for it until it expires
                        (409 on a follower: the reporter's next report may reach the leader)
GET  /releases, POST /releases/start, POST /releases/NAME/pause|resume|promote|abort
                        canary releases (``control.release_admin``)
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control import release_admin
from control.json_http import HttpService, JsonHandler
from control.leadership import NotLeaderError
from control.server import ControlServer
from router_lib.backlog import BacklogError

log = logging.getLogger(__name__)


def _handler(controller: ControlServer) -> type[JsonHandler]:
    class Handler(JsonHandler):
        log_name = "admin"

        def do_GET(self) -> None:  # noqa: N802
            path = urlparse(self.path).path
            answer = release_admin.handle_get(controller.loop, path)
            if answer is not None:
                self.send_json(*answer)
            elif path == "/status":
                self.send_json(200, controller.status())
            elif path == "/metrics":
                self.send_body(200, generate_latest(controller.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                health = controller.health()
                self.send_json(200 if health["ok"] else 503, health)
            elif path == "/readyz":  # ADS has a snapshot to serve (even one with no replicas yet)
                version = controller.loop.view.snapshot_version
                self.send_json(200 if version else 503, {"ready": bool(version), "snapshot_version": version})
            elif path == "/livez":
                self.send_json(200, {"alive": True})
            else:
                self.send_json(404, {"error": f"no such path {path!r}; try /status, /metrics, /healthz, /readyz, /livez"})

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path.startswith("/releases/"):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = release_admin.handle_post(controller.loop, url.path, query, body)
                if answer is not None:
                    self.send_json(*answer)
                    return
            if url.path == "/backlog":
                self._backlog()
                return
            pool = query.get("pool", [""])[0]
            if url.path not in ("/drain", "/undrain", "/drain-replica"):
                self.send_json(404, {"error": f"no such path {url.path!r}; try /backlog, /drain, /undrain or /drain-replica"})
                return
            if not pool:
                self.send_json(400, {"error": "missing query parameter 'pool'"})
                return
            try:
                controller.require_leader()
            except NotLeaderError as e:  # a follower's decision would be overwritten by the leader's
                self.send_json(409, {"error": str(e)})
                return
            try:
                if url.path == "/drain":
                    version = controller.drain(pool)
                    self.send_json(200, {"drained": pool, "snapshot_version": version})
                elif url.path == "/drain-replica":
                    port_text = query.get("http_port", [""])[0]
                    if not port_text.isdigit():
                        self.send_json(400, {"error": f"query parameter 'http_port' must be a port number, got {port_text!r}"})
                        return
                    host = query.get("host", ["127.0.0.1"])[0]
                    version = controller.loop.drain_replica(pool, host, int(port_text))
                    self.send_json(200, {"drained_replica": f"{pool}/{host}:{port_text}", "snapshot_version": version})
                else:
                    controller.undrain(pool)
                    self.send_json(200, {"undrained": pool})
            except KeyError as e:
                self.send_json(400, {"error": str(e).strip('"')})
            except TimeoutError as e:
                self.send_json(504, {"error": f"drain of {pool} not acknowledged: {e}"})

        def _backlog(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 64 << 10:
                self.send_json(413, {"error": f"a backlog report is at most 64 KiB, got {length} bytes"})
                return
            try:
                payload = json.loads(self.rfile.read(length) or b"null")
            except (ValueError, UnicodeDecodeError) as e:
                self.send_json(400, {"error": f"body is not JSON: {e}"})
                return
            try:  # only the leader plans capacity; a worker behind a Service reaches it on a later report
                controller.require_leader()
            except NotLeaderError as e:
                self.send_json(409, {"error": str(e)})
                return
            try:
                report = controller.loop.report_backlog(payload)
            except BacklogError as e:
                self.send_json(400, {"error": str(e)})
                return
            self.send_json(200, {"accepted": report.as_dict(controller.loop.wall_clock())})

    return Handler


class AdminServer(HttpService):
    def __init__(self, controller: ControlServer, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(_handler(controller), port=port, host=host, thread_name="xds-admin")
