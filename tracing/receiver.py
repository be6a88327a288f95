"""A small OTLP/HTTP trace receiver for the local platform: every span becomes one JSON line.

``POST /v1/traces`` with a protobuf or JSON ``ExportTraceServiceRequest`` (what Envoy, Triton and
the OpenTelemetry SDK send) answers an empty ``ExportTraceServiceResponse`` and appends the spans
to ``out`` (``tracing.otlp`` gives the record).  Not a collector: no batching, retries or
sampling of its own; in a cluster the OpenTelemetry Collector takes this place (``k8s/otel/``).

    python -m tracing receive --out build/traces.jsonl --port 4318
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tracing.otlp import OtlpDecodeError, decode
from tracing.settings import TRACES_PATH

# An export is a few kB; a client that sends more than this is not an OTLP exporter.
MAX_BODY_BYTES = 16 * 1024 * 1024


class _TooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        """The request body, sized or chunked (Envoy's OTLP/HTTP exporter sends it chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _TooLarge()
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _TooLarge()
        return self.rfile.read(length)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._answer(404, b"only POST /v1/traces is served\n", "text/plain")
            return
        content_type = self.headers.get("Content-Type", "")
        try:
            spans = decode(self._body(), content_type)
        except _TooLarge:
            self._answer(413, b"export too large\n", "text/plain")
            return
        except OtlpDecodeError as e:
            self._answer(400, f"{e}\n".encode(), "text/plain")
            return
        self.server.receiver.write(spans)
        # An empty ExportTraceServiceResponse in the request's own encoding.
        if content_type.startswith("application/json"):
            self._answer(200, b"{}", "application/json")
        else:
            self._answer(200, b"", "application/x-protobuf")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class OtlpReceiver:
    """``start()`` listens (port 0: a free one, read back from ``port``); ``stop()`` closes it."""

    def __init__(self, out: Path | str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.out = Path(out)
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.spans_received = 0

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def endpoint(self) -> str:
        """The base URL to give exporters (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://{self.host}:{self.port}"

    def write(self, spans: list[dict[str, Any]]) -> None:
        if not spans:
            return
        lines = "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in spans)
        with self._lock, open(self.out, "a") as f:
            f.write(lines)
            self.spans_received += len(spans)

    def start(self) -> OtlpReceiver:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.touch()
        self._server = _Server((self.host, self._port), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
