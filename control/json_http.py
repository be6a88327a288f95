"""The small JSON-over-HTTP server the control plane's admin API and the batch jobs API share:
a handler base with one way to answer (``send_json``: indented JSON and a newline, values it
cannot encode as their ``str``) and a threaded server bound to loopback by default."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class JsonHandler(BaseHTTPRequestHandler):
    log_name = "http"  # what a request's debug log line starts with

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug(f"{self.log_name}: " + fmt, *args)

    def send_body(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, data: Any) -> None:
        self.send_body(code, (json.dumps(data, indent=1, default=str) + "\n").encode())


class HttpService:
    """``handler`` served on its own daemon thread; ``port`` 0 picks a free one (``self.port``)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, port: int = 0, host: str = "127.0.0.1",
                 thread_name: str = "http") -> None:
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=thread_name, daemon=True)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
