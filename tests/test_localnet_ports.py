"""Ports for local processes (Triton, Envoy's listeners, the test beds): below the kernel's
ephemeral range, so that no outgoing connection takes one between picking it and the bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from localnet.ports import ephemeral_port_floor, free_port, free_ports


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


def test_free_ports_are_distinct_below_the_range_and_fall_back_to_the_kernel_without_room() -> None:
    floor = ephemeral_port_floor()
    ports = free_ports(8)
    assert len(set(ports)) == 8 and all(1024 <= p < floor for p in ports), (ports, floor)
    assert free_ports(0) == []
    # no room below the floor: any port the kernel gives, still distinct
    assert len(set(free_ports(3, floor=1024))) == 3
    with pytest.raises(ValueError, match="n must be >= 0"):
        free_ports(-1)


def test_the_platform_and_the_test_beds_share_the_one_picker() -> None:
    import fleet.triton_process
    import xds_server.testbed
    from localnet import ports

    assert fleet.triton_process.free_ports is ports.free_ports
    assert xds_server.testbed.free_port is ports.free_port
