"""``XdsServer``: the ADS servicer on a grpc.aio server, running on its own event-loop thread so a
plain synchronous control loop (or a test) can drive it:

    server = XdsServer(port=0, registry=registry)
    port = server.start()
    version = server.set_snapshot(build_snapshot(pools, routes, settings))  # refuses inconsistent
    server.wait_acked(version, timeout_s=2)
    server.stop()

With ``tls=`` (an ``xds_server.tls.Identity``) the port is mTLS only: a client must present a
certificate signed by the same CA, or the handshake fails before any RPC (docs/security.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from prometheus_client import CollectorRegistry

from xds_server.ads import ANY_NODE, AdsServicer
from xds_server.metrics import XdsMetrics
from xds_server.snapshot import InconsistentSnapshotError, Snapshot
from xds_server.tls import Identity, grpc_server_credentials


class XdsServer:
    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", registry: CollectorRegistry | None = None,
                 tls: Identity | None = None) -> None:
        self.host = host
        # Read now, so a missing certificate fails the constructor with a message, not the thread.
        self._credentials = grpc_server_credentials(tls) if tls is not None else None
        self._requested_port = port
        self.port: int | None = None
        self._metrics = XdsMetrics(registry)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self.servicer: AdsServicer | None = None

    def start(self) -> int:
        """Start serving; returns the bound port (useful with port=0)."""
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self.servicer = AdsServicer(self._metrics)
            self._server = grpc.aio.server(
                options=[
                    # Envoy and gRPC clients keep this stream open for hours; answer their pings.
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                    ("grpc.max_concurrent_streams", 100000),
                ]
            )
            ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, self._server)
            address = f"{self.host}:{self._requested_port}"
            if self._credentials is not None:
                port = self._server.add_secure_port(address, self._credentials)
            else:
                port = self._server.add_insecure_port(address)
            await self._server.start()
            started.set_result(port)

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except BaseException as error:  # surface start failures (port in use) to start()
                started.set_exception(error)
                return
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="xds-server", daemon=True)
        self._thread.start()
        self.port = started.result(timeout=10)
        return self.port

    def _call(self, coroutine: Any, timeout_s: float | None = None) -> Any:
        assert self._loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def set_snapshot(self, snapshot: Snapshot, node_id: str = ANY_NODE, *, check: bool = True) -> str:
        """Publish ``snapshot`` for ``node_id`` (``"*"``: every node without its own); returns its
        version.  Raises ``InconsistentSnapshotError`` listing the problems, publishing nothing.
        ``check=False`` skips the check: only for tests of how clients handle a bad config (NACK)."""
        problems = snapshot.consistent() if check else []
        if problems:
            raise InconsistentSnapshotError(problems)

        async def publish() -> None:
            assert self.servicer is not None
            self.servicer.set_snapshot(snapshot, node_id)

        self._call(publish(), timeout_s=10)
        return snapshot.version

    def wait_acked(self, version: str, timeout_s: float = 5.0, min_streams: int = 1) -> bool:
        """Block until every connected stream that should hold ``version`` ACKed it (and at least
        ``min_streams`` do); False on timeout."""
        assert self.servicer is not None
        return bool(self._call(self.servicer.wait_acked(version, timeout_s, min_streams), timeout_s + 5))

    def current_version(self, node_id: str = ANY_NODE) -> str | None:
        """Version of the snapshot in force for ``node_id`` (falling back to ``"*"``), if any."""
        assert self.servicer is not None
        snapshot = self.servicer.snapshot_for(node_id)
        return snapshot.version if snapshot else None

    def status(self) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            assert self.servicer is not None
            return self.servicer.status()

        return list(self._call(read(), timeout_s=5))

    def stop(self, grace_s: float = 0.5) -> None:
        if self._loop is None:
            return
        if self._server is not None:
            self._call(self._server.stop(grace_s), timeout_s=grace_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> XdsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
