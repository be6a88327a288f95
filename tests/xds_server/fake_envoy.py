"""A fake xDS client: one ADS stream over a real gRPC channel, driven step by step by a test."""

from __future__ import annotations

import queue
import threading

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

_END = object()


class FakeEnvoy:
    def __init__(self, port: int, node_id: str = "envoy-test") -> None:
        self.node_id = node_id
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._requests: queue.Queue[object] = queue.Queue()
        self.responses: queue.Queue[discovery_pb2.DiscoveryResponse] = queue.Queue()
        self._first = True
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._call = stub.StreamAggregatedResources(iter(self._next_request, _END))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _next_request(self) -> object:
        return self._requests.get()

    def _read(self) -> None:
        try:
            for response in self._call:
                self.responses.put(response)
        except grpc.RpcError:
            pass

    def request(
        self,
        type_url: str,
        names: tuple[str, ...] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        if self._first:
            request.node.CopyFrom(base_pb2.Node(id=self.node_id))
            self._first = False
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._requests.put(request)

    def receive(self, timeout_s: float = 5) -> discovery_pb2.DiscoveryResponse:
        return self.responses.get(timeout=timeout_s)

    def nothing_received(self, within_s: float = 0.3) -> bool:
        try:
            self.responses.get(timeout=within_s)
            return False
        except queue.Empty:
            return True

    def ack(self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        self.request(response.type_url, names, version=response.version_info, nonce=response.nonce)

    def subscribe_and_ack(self, type_url: str, names: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryResponse:
        self.request(type_url, names)
        response = self.receive()
        self.ack(response, names)
        return response

    def close(self) -> None:
        self._requests.put(_END)
        self._call.cancel()
        self.channel.close()
