"""The comparator's lean HTTP front: what Envoy's mirror sends (keep-alive, Content-Length or
chunked, pipelined) reaches ``on_infer`` whole, and anything else gets a clear 400."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from releases.mirror_http import MirrorHttpServer


@pytest.fixture
def front() -> Iterator[tuple[MirrorHttpServer, list[tuple[str, bytes]]]]:
    got: list[tuple[str, bytes]] = []
    server = MirrorHttpServer("127.0.0.1", 0, lambda path, body: got.append((path, body)), lambda: "x_total 3\n").start()
    yield server, got
    server.stop()


def raw(server: MirrorHttpServer, data: bytes, replies: int) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while out.count(b"HTTP/1.1 ") < replies or not out.endswith((b"}", b"\n")):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def test_infer_bodies_reach_the_handler_over_one_keep_alive_session(front) -> None:
    server, got = front
    session = requests.Session()
    for i in range(3):
        r = session.post(f"http://127.0.0.1:{server.port}/v2/models/m/infer", data=b'{"i": %d}' % i)
        assert r.status_code == 200 and r.json() == {"mirrored": True}
    assert got == [("/v2/models/m/infer", b'{"i": %d}' % i) for i in range(3)]
    assert session.get(f"http://127.0.0.1:{server.port}/metrics").text == "x_total 3\n"


def test_pipelined_and_chunked_requests_are_each_answered(front) -> None:
    server, got = front
    one = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    two = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nwor\r\n2\r\nld\r\n0\r\n\r\n")
    out = raw(server, one + two, 2)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert got == [("/v2/models/m/infer", b"hello"), ("/v2/models/m/infer", b"world")]


def test_a_malformed_request_gets_400_and_the_connection_closes(front) -> None:
    server, got = front
    out = raw(server, b"NONSENSE\r\n\r\n", 1)
    assert out.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in out and got == []
