"""A replica whose picked port is taken before Triton binds it moves to new ports (a race on any
shared machine: another process can bind between our pick and Triton's start)."""

from __future__ import annotations

import socket

import pytest

from fleet.triton_process import Ports, TritonProcess, prepare_backend_dir

pytestmark = pytest.mark.integration


def _taken_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_a_start_that_lost_its_port_moves_to_new_ports(tmp_path, which):
    (tmp_path / "repo").mkdir()
    with _taken_port() as busy:
        taken = busy.getsockname()[1]
        free = Ports.pick()
        ports = Ports(taken, free.grpc, free.metrics) if which == "http" else Ports(free.http, taken, free.metrics)
        triton = TritonProcess("ports-test", tmp_path / "repo", prepare_backend_dir(tmp_path / "backends"),
                               tmp_path / "triton.log", ports=ports)
        triton.start()
        try:
            triton.wait_ready(90)
            assert triton.ready()
            assert taken not in (triton.ports.http, triton.ports.grpc, triton.ports.metrics)
            assert "already in use" in (tmp_path / "triton.log").read_text()
        finally:
            triton.stop()
    assert triton.shm_regions() == [] and triton.orphan_stub_pids() == []


def test_without_moves_a_lost_port_is_an_error_that_says_so(tmp_path):
    (tmp_path / "repo").mkdir()
    with _taken_port() as busy:
        free = Ports.pick()
        triton = TritonProcess("ports-test", tmp_path / "repo", prepare_backend_dir(tmp_path / "backends"),
                               tmp_path / "triton.log", ports=Ports(busy.getsockname()[1], free.grpc, free.metrics))
        triton.start()
        try:
            with pytest.raises(RuntimeError, match="already in use"):
                triton.wait_ready(90, port_moves=0)
        finally:
            triton.stop()
