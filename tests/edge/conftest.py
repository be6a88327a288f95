"""The edge tests' data plane: one real Triton CPU pool (both sample models), the ADS server and a
real Envoy, started once for the package (``benchmarks.edge.plane``); each module publishes the
edge settings it tests and waits for Envoy's ACK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient

from benchmarks.edge.plane import EdgePlane


@pytest.fixture(scope="session")
def edge_plane(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgePlane]:
    plane = EdgePlane(artifacts=artifacts, workdir=tmp_path_factory.mktemp("edge-plane")).start()
    try:
        yield plane
    finally:
        plane.stop()


def good_rest_body() -> dict:
    return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


def assert_platform_serves(plane: EdgePlane, headers: dict[str, str] | None = None,
                           metadata: dict[str, str] | None = None) -> None:
    """Ready through Envoy, and a good request on each protocol succeeds."""
    r = requests.get(f"http://{plane.http_url}/v2/health/ready", timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(f"http://{plane.http_url}/v2/models/digits_classifier/infer", json=good_rest_body(),
                      headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text
    client = grpcclient.InferenceServerClient(plane.grpc_url)
    inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
    assert client.infer("digits_classifier", [inp], headers=metadata or {}, client_timeout=30).as_numpy("label").shape == (1, 1)
