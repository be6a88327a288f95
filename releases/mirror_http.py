"""The comparator's HTTP front: a minimal HTTP/1.1 server on one asyncio event loop.

Why not ``http.server``: every mirrored request lands here, on the same machine as the live path
locally, so whatever CPU the front takes per request is taken from Envoy, Triton and the client.
``ThreadingHTTPServer`` parses headers with ``email.parser``, answers with several unbuffered
writes and switches threads per connection; this front reads the request line and the one header
it needs (the body's length), queues ``(path, body)`` and answers a fixed, pre-built reply in one
write, all in one thread with no locks (benchmarks/results/release/mirror_overhead.md measures
both).  It speaks exactly what Envoy's mirror sends: keep-alive HTTP/1.1 requests with a
``Content-Length`` or ``chunked`` body, pipelined or not.  Anything else is answered 400 and the
connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
MIRRORED = b'{"mirrored": true}'


def _reply(status: bytes, body: bytes, content_type: bytes = b"application/json", close: bool = False) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n" + body)


MIRRORED_REPLY = _reply(b"200 OK", MIRRORED)
BAD_REQUEST = _reply(b"400 Bad Request", b'{"error": "bad request"}', close=True)


class _Request:
    """What the front needs of one request, parsed from its head (bytes up to the blank line)."""

    __slots__ = ("method", "path", "length", "chunked", "close")

    def __init__(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise ValueError(f"bad request line {lines[0][:80]!r}")
        self.method, self.path = parts[0], parts[1].decode("latin-1")
        self.length, self.chunked, self.close = 0, False, parts[2] == b"HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ValueError(f"bad header line {line[:80]!r}")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
                if not 0 <= self.length <= MAX_BODY_BYTES:
                    raise ValueError(f"content-length {self.length} out of range")
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.close = b"close" in value.lower()


class _Connection(asyncio.Protocol):
    def __init__(self, front: MirrorHttpServer) -> None:
        self.front = front
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            while self._one():
                pass
        except ValueError as e:
            log.debug("mirror front: %s", e)
            if self.transport is not None:
                self.transport.write(BAD_REQUEST)
                self.transport.close()

    def _one(self) -> bool:
        """Handle one complete request at the buffer's start; False when more bytes are needed."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise ValueError("request head too large")
            return False
        request = _Request(bytes(self.buffer[:end]))
        start = end + 4
        if request.chunked:
            body, consumed = _dechunk(self.buffer, start)
            if body is None:
                return False
        else:
            consumed = start + request.length
            if len(self.buffer) < consumed:
                return False
            body = bytes(self.buffer[start:consumed])
        del self.buffer[:consumed]
        assert self.transport is not None
        self.transport.write(self.front.handle(request.method, request.path, body))
        if request.close:
            self.transport.close()
            return False
        return True


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes | None, int]:
    """(body, bytes consumed) of a complete chunked body at ``start``; (None, 0) if incomplete."""
    out, at = bytearray(), start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None, 0
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            return (bytes(out), trailer_end + 4) if trailer_end >= 0 else (None, 0)
        if len(buffer) < at + size + 2:
            return None, 0
        out += buffer[at:at + size]
        at += size + 2
        if len(out) > MAX_BODY_BYTES:
            raise ValueError("chunked body too large")


class MirrorHttpServer:
    """``on_infer(path, body)`` for every ``POST /v2/models/.../infer`` (it must not block: queue);
    ``metrics()`` answers ``GET /metrics``.  Every other request gets a small JSON 200."""

    def __init__(self, host: str, port: int, on_infer: Callable[[str, bytes], None],
                 metrics: Callable[[], str]) -> None:
        self.host, self.port = host, port
        self.on_infer, self.metrics = on_infer, metrics
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, method: bytes, path: str, body: bytes) -> bytes:
        if method == b"POST":
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                self.on_infer(path, body)
            return MIRRORED_REPLY
        if path.startswith("/metrics"):
            return _reply(b"200 OK", self.metrics().encode(), b"text/plain; version=0.0.4")
        return _reply(b"200 OK", b'{"comparator": true}')

    def start(self) -> MirrorHttpServer:
        ready = threading.Event()

        async def serve() -> None:
            self._server = await self._loop.create_server(lambda: _Connection(self), self.host, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="comparator-http", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the comparator's HTTP front did not start on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return

        def close() -> None:
            if self._server is not None:
                self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(timeout=5)
        self._thread = None
