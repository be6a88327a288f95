"""The ADS servicer: state-of-the-world, aggregated discovery over grpc.aio.

It owns only stream state (what each stream asked for, what was sent, what was ACKed); resources
come from immutable ``Snapshot`` values set per node id (``"*"`` for any node).  Rules:
 * push order CDS, EDS, LDS, RDS on every change (see ``protos.PUSH_ORDER``);
 * a type is pushed only when what the stream would get changed: each answer's ``version_info`` is
   a hash of exactly the resources in it, so a weight change re-sends RDS only;
 * a request whose nonce is not the last one sent for its type is stale and ignored;
 * a NACK (``error_detail`` set) is logged with Envoy's reason and counted; nothing is re-sent, so
   the client keeps its last good config until a newer snapshot arrives;
 * clusters re-sent without endpoints: the next endpoints request is answered even when they did
   not change (Envoy re-creates a changed cluster, and a warming cluster waits for its endpoints);
 * make before break: when the clusters change, listeners and routes are held back until the
   client has ACKed the clusters and asked for (and ACKed) the endpoints of every new cluster, so a
   route never names a cluster that is missing or still warming;
 * answers hold everything for a wildcard request (Envoy's LDS/CDS) and exactly the asked names
   otherwise (EDS/RDS, and everything proxyless gRPC asks, one name at a time).
All methods run on the server's event loop; ``XdsServer`` wraps them for other threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from xds_server.metrics import XdsMetrics
from xds_server.protos import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT_NAMES
from xds_server.snapshot import Snapshot

log = logging.getLogger(__name__)
ANY_NODE = "*"


@dataclass
class _TypeState:
    names: frozenset[str] | None = None  # None: wildcard subscription
    sent_version: str | None = None  # version_info of the last answer (hash of its resources)
    sent_nonce: str = ""
    sent_at: float = 0.0
    sent_snapshot: str | None = None  # snapshot version whose content the last answer carries
    acked_version: str | None = None
    acked_snapshot: str | None = None
    last_nack: str | None = None


@dataclass
class _Stream:
    id: int
    peer: str
    node_id: str = ""
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    types: dict[str, _TypeState] = field(default_factory=dict)
    # Clusters were re-sent: Envoy re-creates a changed cluster and asks for its endpoints again,
    # and a warming cluster waits for an answer (its initial_fetch_timeout, 15 s) even when the
    # endpoints did not change, so the next endpoints request is answered whatever its version.
    endpoints_owed: bool = False
    routes_held: bool = False  # listeners/routes wait for new clusters to be ACKed and filled
    nonces: itertools.count = field(default_factory=lambda: itertools.count(1))


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, metrics: XdsMetrics | None = None) -> None:
        self.metrics = metrics or XdsMetrics()
        self._snapshots: dict[str, Snapshot] = {}
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._notify_pending = False
        # (snapshot version, type, names) -> (type version, packed resources); shared by streams.
        self._answers: dict[tuple[str, str, frozenset[str] | None], tuple[str, list[any_pb2.Any]]] = {}

    # ---- publishing --------------------------------------------------------------------------
    def set_snapshot(self, snapshot: Snapshot, node_id: str = ANY_NODE) -> None:
        """Make ``snapshot`` current for ``node_id`` and push it to the streams it applies to.
        Consistency is the caller's check (``XdsServer.set_snapshot`` refuses inconsistent ones)."""
        previous = self._snapshots.get(node_id)
        self._snapshots[node_id] = snapshot
        if previous is not None and previous.version == snapshot.version:
            return
        live = {s.version for s in self._snapshots.values()}
        self._answers = {k: v for k, v in self._answers.items() if k[0] in live}
        self.metrics.snapshot_version(snapshot.version)
        for stream in self._streams.values():
            if node_id == ANY_NODE or stream.node_id == node_id:
                stream.events.put_nowait(("snapshot", None))

    def snapshot_for(self, node_id: str) -> Snapshot | None:
        return self._snapshots.get(node_id) or self._snapshots.get(ANY_NODE)

    # ---- the stream --------------------------------------------------------------------------
    async def StreamAggregatedResources(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream(id=next(self._ids), peer=context.peer())
        self._streams[stream.id] = stream
        self.metrics.connected_streams(len(self._streams))
        reader = asyncio.ensure_future(self._read(request_iterator, stream))
        try:
            while True:
                kind, request = await stream.events.get()
                if kind == "end":
                    break
                if kind == "request":
                    answers = self._on_request(stream, request)
                else:
                    answers = self._on_snapshot(stream)
                for answer in answers:
                    yield answer
        finally:
            reader.cancel()
            del self._streams[stream.id]
            self.metrics.connected_streams(len(self._streams))
            await self._notify()
            log.info("stream %d (%s, node %s) closed", stream.id, stream.peer, stream.node_id)

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], stream: _Stream) -> None:
        try:
            async for request in requests:
                stream.events.put_nowait(("request", request))
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            stream.events.put_nowait(("end", None))

    def _on_request(
        self, stream: _Stream, request: discovery_pb2.DiscoveryRequest
    ) -> list[discovery_pb2.DiscoveryResponse]:
        if request.node.id and not stream.node_id:
            stream.node_id = request.node.id
        type_url = request.type_url
        new_type = type_url not in stream.types
        state = stream.types.setdefault(type_url, _TypeState())
        first = state.sent_nonce == "" and request.response_nonce == ""
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            return []  # stale: answers a push that a newer one has replaced
        if request.response_nonce:
            if request.HasField("error_detail"):
                state.last_nack = request.error_detail.message
                self.metrics.nacked(type_url)
                log.warning(
                    "NACK from node %s for %s version %s (keeps %s): %s",
                    stream.node_id,
                    SHORT_NAMES.get(type_url, type_url),
                    state.sent_version,
                    request.version_info or "none",
                    request.error_detail.message,
                )
            elif request.version_info == state.sent_version:
                if state.acked_version != state.sent_version:
                    self.metrics.acked(time.monotonic() - state.sent_at)
                state.acked_version, state.acked_snapshot = state.sent_version, state.sent_snapshot
                state.last_nack = None
                self._notify_soon()
        # Wildcard: "*" asked for, or no names on the first request (legacy, what Envoy sends for
        # LDS/CDS) and still none after.  Otherwise no names means unsubscribed from all.
        requested = frozenset(request.resource_names)
        wildcard = "*" in requested or (not requested and (new_type or state.names is None))
        names = None if wildcard else requested
        names_changed = names != state.names
        state.names = names
        answers = []
        held = stream.routes_held and type_url in (LISTENER, ROUTE)
        owed = type_url == ENDPOINT and stream.endpoints_owed
        if owed:
            stream.endpoints_owed = False
        if not held or first or names_changed:
            answer = self._answer(stream, type_url, state, force=first or names_changed or owed)
            if answer:
                answers.append(answer)
        if stream.routes_held and self._clusters_ready(stream):
            stream.routes_held = False
            answers.extend(self._answers_for(stream, (LISTENER, ROUTE)))
        return answers

    def _on_snapshot(self, stream: _Stream) -> list[discovery_pb2.DiscoveryResponse]:
        answers = self._answers_for(stream, (CLUSTER, ENDPOINT))
        if any(a.type_url == CLUSTER for a in answers):
            stream.routes_held = True
            # endpoints pushed with the clusters fill the re-created ones; otherwise they are owed
            stream.endpoints_owed = ENDPOINT in stream.types and not any(a.type_url == ENDPOINT for a in answers)
        if not stream.routes_held or self._clusters_ready(stream):
            stream.routes_held = False
            answers.extend(self._answers_for(stream, (LISTENER, ROUTE)))
        self._notify_soon()
        return answers

    def _answers_for(self, stream: _Stream, type_urls: tuple[str, ...]) -> list[discovery_pb2.DiscoveryResponse]:
        answers = []
        for type_url in type_urls:
            state = stream.types.get(type_url)
            if state is not None:
                answer = self._answer(stream, type_url, state, force=False)
                if answer:
                    answers.append(answer)
        return answers

    def _clusters_ready(self, stream: _Stream) -> bool:
        """The last clusters sent are ACKed, and the endpoints of every one of them were asked for
        and the last endpoints answer ACKed (Envoy asks for new clusters' endpoints after its CDS ACK)."""
        cds, eds = stream.types.get(CLUSTER), stream.types.get(ENDPOINT)
        if cds is None:
            return True
        snapshot = self.snapshot_for(stream.node_id)
        if cds.acked_version != cds.sent_version or snapshot is None:
            return False
        needed = {name for name, c in snapshot.select(CLUSTER, cds.names).items() if c.type == c.EDS}
        if not needed:
            return True
        covered = eds is not None and (eds.names is None or needed <= eds.names)
        return covered and eds is not None and eds.acked_version == eds.sent_version

    def _answer(
        self, stream: _Stream, type_url: str, state: _TypeState, *, force: bool
    ) -> discovery_pb2.DiscoveryResponse | None:
        snapshot = self.snapshot_for(stream.node_id)
        if snapshot is None:
            return None  # nothing to say yet; the first snapshot will answer
        version, resources = self._resources(snapshot, type_url, state.names)
        if version == state.sent_version and not force:
            # Same content under a new snapshot: nothing to push, but this stream is now as current
            # as if it had been pushed and ACKed.
            state.sent_snapshot = snapshot.version
            if state.acked_version == version:
                state.acked_snapshot = snapshot.version
            return None
        state.sent_version, state.sent_snapshot = version, snapshot.version
        state.sent_nonce = str(next(stream.nonces))
        state.sent_at = time.monotonic()
        self.metrics.pushed(type_url)
        return discovery_pb2.DiscoveryResponse(
            version_info=version, resources=resources, type_url=type_url, nonce=state.sent_nonce
        )

    def _resources(
        self, snapshot: Snapshot, type_url: str, names: frozenset[str] | None
    ) -> tuple[str, list[any_pb2.Any]]:
        key = (snapshot.version, type_url, names)
        cached = self._answers.get(key)
        if cached is None:
            selected = snapshot.select(type_url, names)
            digest = hashlib.sha256()
            packed = []
            for name, message in selected.items():
                item = any_pb2.Any()
                item.Pack(message, deterministic=True)
                digest.update(name.encode() + b"\0" + item.value + b"\0")
                packed.append(item)
            cached = self._answers[key] = (digest.hexdigest()[:16], packed)
        return cached

    # ---- convergence -------------------------------------------------------------------------
    def _stream_at(self, stream: _Stream, version: str) -> bool:
        return bool(stream.types) and all(s.acked_snapshot == version for s in stream.types.values())

    def acked_by_all(self, version: str, min_streams: int = 1) -> bool:
        """True when at least ``min_streams`` streams currently hold ``version`` and every one that
        should (its node's snapshot is ``version``) has ACKed it for every type it subscribed to."""
        relevant = [
            s
            for s in self._streams.values()
            if (snap := self.snapshot_for(s.node_id)) is not None and snap.version == version
        ]
        return len(relevant) >= min_streams and all(self._stream_at(s, version) for s in relevant)

    async def wait_acked(self, version: str, timeout_s: float, min_streams: int = 1) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.acked_by_all(version, min_streams)), timeout_s
                )
                return True
            except TimeoutError:
                return False

    def _notify_soon(self) -> None:
        # Coalesced: a push to N streams brings N ACKs; waking the waiters once per batch instead
        # of once per ACK keeps convergence checks linear rather than quadratic in streams.
        if not self._notify_pending:
            self._notify_pending = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._notify()))

    async def _notify(self) -> None:
        self._notify_pending = False
        async with self._changed:
            self._changed.notify_all()

    def status(self) -> list[dict[str, Any]]:
        """Per stream and type: what was sent and ACKed, and the last NACK's reason, for /status."""
        return [
            {
                "stream": s.id,
                "peer": s.peer,
                "node": s.node_id,
                "types": {
                    SHORT_NAMES.get(t, t): {
                        "sent": st.sent_version,
                        "acked": st.acked_version,
                        "snapshot_acked": st.acked_snapshot,
                        "last_nack": st.last_nack,
                        "names": ["*"] if st.names is None else sorted(st.names),
                    }
                    for t, st in s.types.items()
                },
            }
            for s in self._streams.values()
        ]
