"""Several control servers, one decider: a leader lease in front of the control loop.

Every control server serves ADS, so an Envoy may be connected to any of them and reconnect to any
other; only the one holding the lease decides.  Each tick:

* the **leader** runs the loop's tick (read, decide, write): its record goes to the shared
  ``StateStore``;
* a **follower** reads that record and republishes it with the replicas its own discovery sees
  (``ControlLoop.resume``, the same code a restarted server runs), so every server hands out the
  same snapshot (same inputs, same content hash, same version);
* a follower that gets the lease first resumes from the shared record, then decides: it carries on
  exactly where the old leader stopped (weights, capacity windows, drains, releases), because every
  decider's state is in that one record.

The one decision that shapes it: the lease is the only arbiter of who writes, so the store needs
no locking of its own.  Locally the lease is ``flock`` on a file: the kernel drops it the instant
the leader dies, so a follower takes over on its next tick.  In a cluster it is a Kubernetes Lease
(``control.lease_k8s``), renewed every tick and taken over once it expires.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from control.loop import ControlLoop
from control.ports import DiscoveryError, ReplicaSet

log = logging.getLogger(__name__)


class NotLeaderError(RuntimeError):
    """An operation that writes decisions was asked of a follower."""


class LeaderLease(Protocol):
    identity: str

    def hold(self) -> bool:
        """Acquire or renew; True while this server is the leader (may be called every tick)."""
        ...

    def holder(self) -> str | None: ...

    def release(self) -> None: ...


class FileLease:
    """``flock`` on ``path``: held while this process keeps the file open, dropped by the kernel
    when it exits or dies.  The holder's identity is written into the file for the others to show."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path = path
        self.identity = identity
        self._fd: int | None = None

    def hold(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, self.identity.encode())
        os.fsync(fd)
        self._fd = fd
        return True

    def holder(self) -> str | None:
        if self._fd is not None:
            return self.identity
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ElectedLoop:
    """The control loop behind a lease: decide when leading, follow the shared record otherwise."""

    def __init__(self, loop: ControlLoop, lease: LeaderLease, clock: Callable[[], float] = time.time) -> None:
        self.loop = loop
        self.lease = lease
        self.clock = clock
        self.leader = False
        self.leader_since_unix_s: float | None = None
        self.changes = 0
        self._seen_record: Mapping[str, Any] | None = None
        self._seen_replicas: ReplicaSet | None = None

    def tick(self) -> None:
        if self.lease.hold():
            if not self.leader:
                # The old leader's last record, before deciding anything; if it cannot be read this
                # raises and the server stays a follower until it can.
                resumed = self.loop.resume()
                self.leader, self.leader_since_unix_s = True, self.clock()
                self.changes += 1
                log.info("%s leads now (%s)", self.lease.identity,
                         "resumed the shared record" if resumed else "no shared record yet")
            self.loop.tick()
            return
        if self.leader:
            log.warning("%s lost the lease to %s: following", self.lease.identity, self.lease.holder())
            self.leader, self.leader_since_unix_s = False, None
            self.changes += 1
        self._follow()

    def _follow(self) -> None:
        record = self.loop.store.load()
        try:
            replicas: ReplicaSet | None = self.loop.discovery.read()
        except DiscoveryError:
            replicas = None
        if record is None:
            self.loop._publish_floor(replicas or ReplicaSet())  # listeners, until a leader has decided
            return
        if record != self._seen_record or (replicas is not None and replicas != self._seen_replicas):
            self.loop.resume()
            self._seen_record, self._seen_replicas = record, replicas

    def require_leader(self) -> None:
        if not self.leader:
            raise NotLeaderError(f"{self.lease.identity} is a follower; the leader is {self.lease.holder()}")

    def status(self) -> dict[str, Any]:
        return {"identity": self.lease.identity, "leader": self.leader, "holder": self.lease.holder(),
                "leader_since_unix_s": self.leader_since_unix_s, "changes": self.changes}
