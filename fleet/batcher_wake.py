"""Wake Triton's dynamic batcher where priority levels leave it asleep (docs/overload.md).

**The defect (Triton 2.51, and ``triton-inference-server/core`` at the time of writing).**  With
priority levels or a queue policy, the dynamic batcher does not prefetch: it forms a batch only
once a model instance is waiting for one.  While every instance is busy it waits on its condition
variable for up to 500 ms (``WaitForPayloadSlotAvailable``), woken by a new request or by an
instance's end-of-execution callback.  That callback runs *before* the instance thread has gone
back to wait for work (``TritonBackendThread::BackendThread``: ``payload->Execute()`` notifies,
then ``PayloadRelease`` and ``DequeuePayload``, which registers the waiting consumer without any
notification).  When the batcher wins that race (it does under CPU contention) it finds no waiting
instance and sleeps again: the queued requests wait for the next arrival that finds an idle
instance, or 500 ms.  Measured here: ``benchmarks/resilience/batcher_wakeup.py``.

**The workaround.**  A model config written with ``TierSharing.wake_level`` declares one more
priority level below the tiers', whose queue policy rejects a request 1 us after it is queued,
and names it in the parameter ``batcher_wake_level``.  This waker sends a minimal request at that
level every ``period`` to each such model.  Queuing a request wakes the batcher whenever an
instance is waiting, so a stall lasts at most one period; the request itself has expired by the
time the batcher looks at it, so it is rejected, never executed (no compute, no batch slot, not
in the success or latency statistics).  Its cost: one HTTP request per model per period, and one
``REJECTED`` failure in that model's Triton counters (an ensemble's composing step here: the
platform reads request counters of public models only, and error rates from Envoy).

Standard library only, so that the same file runs beside any Triton image (a sidecar in k8s):
``python3 batcher_wake.py --url http://127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PERIOD_MS", "DISCOVERY_ERRORS", "TARGET_ERRORS", "WAKE_LEVEL_PARAMETER", "BatcherWaker", "WakeTarget", "wake_body",
           "wake_targets"]

log = logging.getLogger("batcher_wake")

# Spelled as model_repository.triton_config.WAKE_LEVEL_PARAMETER (a test checks they agree).
WAKE_LEVEL_PARAMETER = "batcher_wake_level"
# The longest a missed wake-up can then hold a request: well inside the tightest tier's bound
# (gold 50 ms), at 50 requests a second per model (measured cost: docs/overload.md).
DEFAULT_PERIOD_MS = 20.0
# What reading a server's wake targets raises when the server cannot be read (down, starting, not
# HTTP); with a model config it cannot use (ValueError) too.
DISCOVERY_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException, RuntimeError)
TARGET_ERRORS: tuple[type[Exception], ...] = (*DISCOVERY_ERRORS, ValueError)

_DATATYPES = {"TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
              "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
              "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
              "TYPE_STRING": "BYTES", "TYPE_BF16": "BF16"}


@dataclass(frozen=True)
class WakeTarget:
    """One model to wake: its name, its wake-up level and the request body sent at that level."""

    model: str
    level: int
    body: bytes


def wake_body(config: Mapping[str, Any], level: int) -> bytes:
    """A KServe v2 JSON request for the model of ``config`` (Triton's JSON model config): one
    item of zeros per input (a variable dimension is 1), at priority ``level``."""
    batched = int(config.get("max_batch_size", 0)) > 0
    inputs = []
    for spec in config.get("input", []):
        datatype = _DATATYPES.get(spec.get("data_type", ""))
        if datatype is None:
            raise ValueError(f"model {config.get('name')!r} input {spec.get('name')!r}: "
                             f"unsupported data_type {spec.get('data_type')!r}")
        shape = ([1] if batched else []) + [1 if int(d) < 0 else int(d) for d in spec.get("dims", [])]
        count = math.prod(shape)
        zero: Any = "" if datatype == "BYTES" else (False if datatype == "BOOL" else 0)
        inputs.append({"name": spec["name"], "shape": shape, "datatype": datatype, "data": [zero] * count})
    if not inputs:
        raise ValueError(f"model {config.get('name')!r} has no inputs to send")
    return json.dumps({"inputs": inputs, "parameters": {"priority": level}}, separators=(",", ":")).encode()


def wake_level(config: Mapping[str, Any]) -> int | None:
    """The wake-up level a model config declares (``batcher_wake_level``), or None."""
    raw = config.get("parameters", {}).get(WAKE_LEVEL_PARAMETER, {}).get("string_value")
    if raw is None:
        return None
    try:
        level = int(raw)
    except ValueError:
        raise ValueError(f"model {config.get('name')!r}: parameter {WAKE_LEVEL_PARAMETER}={raw!r} is not a level") from None
    declared = int(config.get("dynamic_batching", {}).get("priority_levels", 0))
    if not 1 <= level <= declared:
        raise ValueError(f"model {config.get('name')!r}: {WAKE_LEVEL_PARAMETER}={level} is not one of its "
                         f"{declared} priority levels")
    return level


def wake_targets(configs: Mapping[str, Mapping[str, Any]]) -> list[WakeTarget]:
    """The models among ``configs`` (name -> JSON model config) that declare a wake-up level."""
    out = []
    for name in sorted(configs):
        level = wake_level(configs[name])
        if level is not None:
            out.append(WakeTarget(name, level, wake_body(configs[name], level)))
    return out


class BatcherWaker:
    """Sends every wake target of one Triton (``url``: ``http://host:port`` of its HTTP endpoint)
    its wake-up request each ``period_s``, from daemon threads.  The targets are read from the
    server (its repository index and model configs) when the waker starts and again every
    ``rediscover_s`` (a model reloaded with other levels).

    A wake-up request is answered only once the batcher has looked at it, and the wake-up it
    carries can itself be missed (the same race), so a request may wait for the next one.  The
    ticker therefore never waits for an answer: it hands each request to one of ``senders``
    threads, each with its own keep-alive connection, and skips a tick when all of them are
    still waiting (``skipped``).

    Counters: ``sent``; ``rejected`` (the expected answer: the request expired in the queue);
    ``executed`` (answered 200: the batcher reached it within 1 us, harmless but not intended);
    ``failed`` (anything else, e.g. the server is down; logged once per target and cause)."""

    def __init__(self, url: str, period_s: float = DEFAULT_PERIOD_MS / 1000, rediscover_s: float = 30.0,
                 timeout_s: float = 2.0, senders: int = 4) -> None:
        if not period_s > 0:
            raise ValueError(f"BatcherWaker period_s must be > 0, got {period_s}")
        if senders < 1:
            raise ValueError(f"BatcherWaker senders must be >= 1, got {senders}")
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"BatcherWaker url must be http://host:port, got {url!r}")
        self.host, self.port = parts.hostname, parts.port
        self.period_s, self.rediscover_s, self.timeout_s = period_s, rediscover_s, timeout_s
        self.targets: list[WakeTarget] = []
        self.sent = self.rejected = self.executed = self.failed = self.skipped = 0
        self._count = threading.Lock()
        self._jobs: queue.Queue[WakeTarget] = queue.Queue(maxsize=senders)
        self._senders = senders
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._logged: set[tuple[str, str]] = set()

    # -- one server's HTTP API ------------------------------------------------------------
    def _connection(self) -> _Connection:
        return _Connection(self.host, self.port, self.timeout_s)

    def discover(self) -> list[WakeTarget]:
        """The server's READY models that declare a wake-up level."""
        conn = self._connection()
        try:
            status, raw = conn.request("POST", "/v2/repository/index", b"{}")
            if status != 200:
                raise RuntimeError(f"repository index: HTTP {status}: {raw[:200]!r}")
            configs = {}
            for entry in json.loads(raw):
                if entry.get("state") != "READY":
                    continue
                status, raw = conn.request("GET", f"/v2/models/{entry['name']}/config")
                if status == 200:
                    configs[entry["name"]] = json.loads(raw)
            return wake_targets(configs)
        finally:
            conn.close()

    def _send(self, conn: _Connection, target: WakeTarget) -> None:
        try:
            status, raw = conn.request("POST", f"/v2/models/{target.model}/infer", target.body)
        except (OSError, http.client.HTTPException) as e:
            self._counted("failed")
            self._log_once(target.model, type(e).__name__, f"waking {target.model}: {e}")
            return
        if status == 200:
            self._counted("executed")
            self._log_once(target.model, "executed", f"a wake-up request to {target.model} was executed "
                           "(the batcher reached it within its 1-us timeout); harmless, not intended")
        elif b"timeout" in raw.lower():
            self._counted("rejected")
        else:
            self._counted("failed")
            self._log_once(target.model, str(status), f"waking {target.model}: HTTP {status}: {raw[:200]!r}")

    def _counted(self, name: str) -> None:
        with self._count:
            setattr(self, name, getattr(self, name) + 1)

    def _log_once(self, model: str, cause: str, message: str) -> None:
        if (model, cause) not in self._logged:
            self._logged.add((model, cause))
            log.warning("%s", message)

    # -- the threads ----------------------------------------------------------------------
    def start(self) -> BatcherWaker:
        """Discover now (raises when the server cannot be read) and start waking, if anything to wake."""
        self.targets = self.discover()
        if self.targets and not self._threads:
            self._stop.clear()
            self._threads = [threading.Thread(target=self._sender, name=f"batcher-wake-{self.port}-sender-{i}",
                                              daemon=True) for i in range(self._senders)]
            self._threads.append(threading.Thread(target=self._ticker, name=f"batcher-wake-{self.port}", daemon=True))
            for t in self._threads:
                t.start()
        return self

    def summary(self) -> str:
        return (f"wake-up requests sent {self.sent}, rejected {self.rejected}, executed {self.executed}, "
                f"failed {self.failed}; ticks skipped {self.skipped}")

    @property
    def started(self) -> bool:
        return bool(self._threads)

    @property
    def running(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _ticker(self) -> None:
        next_discovery = time.monotonic() + self.rediscover_s
        while not self._stop.is_set():
            started = time.monotonic()
            for target in self.targets:
                try:
                    self._jobs.put_nowait(target)
                    self._counted("sent")
                except queue.Full:  # every sender still waits for an answer: this tick adds nothing
                    self._counted("skipped")
            if started >= next_discovery:
                next_discovery = started + self.rediscover_s
                try:
                    self.targets = self.discover()
                except TARGET_ERRORS as e:
                    self._log_once("*", "discover", f"re-reading wake targets: {e} (keeping the last ones)")
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    def _sender(self) -> None:
        conn = self._connection()
        while not self._stop.is_set():
            try:
                target = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            self._send(conn, target)
        conn.close()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop ticking; senders finish the request they are waiting on (at most ``timeout_s``)."""
        self._stop.set()
        threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))


class _Connection:
    """One keep-alive HTTP connection, reopened once when the server closed it."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def main(argv: list[str] | None = None) -> int:
    """The sidecar: wait until the server is ready, then wake its models until killed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="Triton's HTTP endpoint (default: %(default)s)")
    ap.add_argument("--period-ms", type=float, default=DEFAULT_PERIOD_MS, help="default: %(default)s")
    ap.add_argument("--rediscover-s", type=float, default=30.0, help="default: %(default)s")
    args = ap.parse_args(argv)
    if not args.period_ms > 0:
        ap.error(f"--period-ms must be > 0, got {args.period_ms}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a pod's stop: say what was done, then go
    waker = BatcherWaker(args.url, period_s=args.period_ms / 1000, rediscover_s=args.rediscover_s)
    try:
        while True:  # the server starts beside us; keep reading until it answers
            try:
                waker.start()
                log.info("waking %s every %.0f ms",
                         [t.model for t in waker.targets] or "nothing (no wake level declared)", args.period_ms)
                break
            except DISCOVERY_ERRORS as e:
                log.info("waiting for Triton at %s: %s", args.url, e)
                time.sleep(2.0)
        while True:
            time.sleep(args.rediscover_s)
            if waker.started and not waker.running:  # a fault it cannot handle: exit, to be restarted
                log.error("a waker thread ended unexpectedly; exiting")
                return 1
            if not waker.started:  # nothing declared a level yet: look again
                try:
                    waker.start()
                except DISCOVERY_ERRORS as e:
                    log.info("re-reading %s: %s", args.url, e)
    finally:
        waker.stop()
        log.info("%s", waker.summary())


if __name__ == "__main__":
    raise SystemExit(main())
