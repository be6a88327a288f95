"""Listener ports for Envoy in tests: below the kernel's ephemeral range, so that no outgoing
connection takes one between picking it and Envoy binding it."""

from __future__ import annotations

import socket
from pathlib import Path

from xds_server.testbed import ephemeral_port_floor, free_port


def test_the_ephemeral_floor_is_read_from_the_kernel_setting_and_defaults_when_unreadable(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t60999\n")
    assert ephemeral_port_floor(str(setting)) == 40000
    assert ephemeral_port_floor(str(tmp_path / "missing")) == 32768
    setting.write_text("garbage\n")
    assert ephemeral_port_floor(str(setting)) == 32768


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    floor = ephemeral_port_floor()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < floor for p in ports), (sorted(ports), floor)
    assert len(ports) > 1  # random, not one fixed port every test would share
    with socket.socket() as s:
        port = next(iter(ports))
        s.bind(("127.0.0.1", port))
