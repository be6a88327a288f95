"""Ports for local processes, picked at run time below the kernel's ephemeral range.

A process told its port on the command line (Triton) or over xDS (Envoy's listeners) binds it
seconds after the port was picked.  A port from the kernel's ephemeral range may meanwhile become
some outgoing connection's local port, and the bind fails (seen in CI: Envoy NACKed a listener
with "Address already in use").  Ports below the range are handed out only to those who ask for
them by number, so picking at random among the ports below it, and checking each by binding it,
leaves only the race with another process doing the same.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOCAL_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
DEFAULT_FLOOR = 32768  # Linux's default ip_local_port_range starts here
SPAN = 12_000  # how many ports below the floor are drawn from
LOWEST = 1024  # never a privileged port
TRIES = 200


def ephemeral_port_floor(path: str = LOCAL_PORT_RANGE) -> int:
    """The lowest port the kernel hands out as an outgoing connection's local port (32768 if unknown)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_FLOOR


def free_ports(n: int, host: str = "127.0.0.1", floor: int | None = None) -> list[int]:
    """``n`` distinct ports free on ``host`` right now, below the ephemeral range where it leaves
    room (else any the kernel gives).  All are held bound until every one is found, so no two are
    the same (three separate picks once gave Triton one port for HTTP and metrics)."""
    if n < 0:
        raise ValueError(f"free_ports: n must be >= 0 (got {n})")
    floor = ephemeral_port_floor() if floor is None else floor
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    try:
        for _ in range(n):
            held.append(_bind_one(host, floor, rng))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on ``host`` right now (``free_ports``)."""
    return free_ports(1, host)[0]


def _bind_one(host: str, floor: int, rng: random.SystemRandom) -> socket.socket:
    low = max(LOWEST, floor - SPAN)
    if floor - 1 > low:
        for _ in range(TRIES):
            s = socket.socket()
            try:
                s.bind((host, rng.randint(low, floor - 1)))
            except OSError:
                s.close()
                continue
            return s
    s = socket.socket()  # no room below the range (or all taken): any port the kernel gives
    try:
        s.bind((host, 0))
    except OSError:
        s.close()
        raise
    return s
