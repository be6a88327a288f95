"""Record one load run against a running ``LocalPlatform`` into a run folder (``run_data``).

Glue at the edge: warm each replica, sample the control server's ``/status`` once a second in
a thread while locust runs as a subprocess, read Triton's emulation counters and statistics
extension before and after (``triton_stats.json``), then write ``run.json`` and ``plan.json``.
Everything after that is pure (``analysis``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from locustfiles.runner import LocustRun, run_locust
from locustfiles.schedule import schedule_from_env
from locustfiles.settings import PACING_NOTES, START_PHASE_NOTES
from reporting.cost import plan_for_run
from reporting.run_data import (
    PLAN,
    REQUESTS,
    RUN,
    STATUS,
    TRITON_STATS,
    PoolInfo,
    RunData,
    TierInfo,
    load_run,
    run_meta,
    trim_status,
)

log = logging.getLogger(__name__)
EMULATION_COUNTERS = ("emulation_executions_total", "emulation_profile_ms_total", "emulation_lag_ms_total",
                      "emulation_lagged_executions_total")


def _get(url: str, timeout_s: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback only
        return r.read()  # type: ignore[no-any-return]


def parse_emulation_counters(text: str) -> dict[str, dict[str, float]]:
    """pool -> counter -> value, summed over models, from one Triton ``/metrics`` text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in EMULATION_COUNTERS:
                out[s.labels.get("pool", "?")][s.name] += s.value
    return {p: dict(c) for p, c in out.items()}


TRITON_COUNTERS = ("nv_inference_count", "nv_inference_exec_count", "nv_inference_compute_infer_duration_us",
                   "nv_inference_queue_duration_us", "nv_inference_request_success")


def parse_triton_counters(text: str) -> dict[str, dict[str, float]]:
    """Triton model name -> counter -> value (summed over versions), from one ``/metrics`` text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if family.name not in TRITON_COUNTERS:  # the parser names samples of a counter `<family>_total`
            continue
        for s in family.samples:
            if s.name in (family.name, family.name + "_total") and "model" in s.labels:
                out[s.labels["model"]][family.name] += s.value
    return {m: dict(c) for m, c in out.items()}


def _each_replica(status: dict[str, Any], port_key: str, path: str, parse: Callable[[bytes], Any], what: str
                  ) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(pool name, replica, ``parse`` of its ``GET path``) for every replica in ``status``; a
    replica that does not answer (or answers garbage) is left out with a warning naming ``what``."""
    for pool in status.get("pools", []):
        for rep in pool.get("replicas", []):
            try:
                value = parse(_get(f"http://127.0.0.1:{rep[port_key]}{path}"))
            except (OSError, ValueError) as e:
                log.warning("could not read %s of %s replica %s: %s", what, pool["name"], rep.get("index"), e)
                continue
            yield pool["name"], rep, value


def scrape_counters(status: dict[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """(emulation counters per pool, Triton counters per pool and Triton model), summed over replicas."""
    emulation: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    triton: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    for pool, _rep, text in _each_replica(status, "metrics_port", "/metrics", bytes.decode, "the metrics"):
        for p, counters in parse_emulation_counters(text).items():
            for k, v in counters.items():
                emulation[p][k] += v
        for model, counters in parse_triton_counters(text).items():
            for k, v in counters.items():
                triton[pool][model][k] += v
    return ({p: dict(c) for p, c in emulation.items()},
            {p: {m: dict(c) for m, c in ms.items()} for p, ms in triton.items()})


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {k: _delta(v, before.get(k, {})) if isinstance(v, dict) else round(v - before.get(k, 0.0), 3)
            for k, v in after.items()}


def warm_up(status: dict[str, Any], requests_per_model: int = 4) -> None:
    """A few requests of each model straight to each replica (first inferences are slow)."""
    import numpy as np
    import tritonclient.http as httpclient

    from locustfiles.payloads import DIGITS_CLASSIFIER, TEXT_EMBEDDING, digits, sentences

    x, _y = digits()
    for pool in status.get("pools", []):
        for rep in pool.get("replicas", []):
            client = httpclient.InferenceServerClient(f"127.0.0.1:{rep['http_port']}", network_timeout=30)
            try:
                for i in range(requests_per_model):
                    if TEXT_EMBEDDING in pool.get("models", []):
                        t = httpclient.InferInput("TEXT", [1, 1], "BYTES")
                        t.set_data_from_numpy(np.array([[sentences()[i].encode()]], dtype=np.object_))
                        client.infer(TEXT_EMBEDDING, [t])
                    if DIGITS_CLASSIFIER in pool.get("models", []):
                        d = httpclient.InferInput("float_input", [1, 64], "FP32")
                        d.set_data_from_numpy(x[i:i + 1])
                        client.infer(DIGITS_CLASSIFIER, [d])
            except Exception as e:  # noqa: BLE001 - warm-up is best effort; the run reports real failures
                log.warning("warm-up of %s failed: %s", pool["name"], e)
            finally:
                client.close()


class JsonlSampler(threading.Thread):
    """Calls ``sample()`` every ``interval_s`` until stopped and appends each JSON-able result (None:
    nothing this time) to ``path`` as one line; a failed sample (OSError, ValueError) is counted in
    ``errors`` and skipped, so one slow scrape never ends the series."""

    def __init__(self, path: Path, sample: Callable[[], Any], interval_s: float = 1.0, name: str = "sampler") -> None:
        super().__init__(daemon=True, name=name)
        self.path, self.sample, self.interval_s = path, sample, interval_s
        self.stop_event = threading.Event()
        self.errors = 0

    def run(self) -> None:
        with open(self.path, "w") as f:
            while not self.stop_event.is_set():
                t = time.time()
                try:
                    line = self.sample()
                    if line is not None:
                        f.write(json.dumps(line, separators=(",", ":")) + "\n")
                        f.flush()
                except (OSError, ValueError):
                    self.errors += 1
                self.stop_event.wait(max(0.0, self.interval_s - (time.time() - t)))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def status_sampler(admin_url: str, path: Path, interval_s: float = 1.0) -> JsonlSampler:
    """The trimmed ``/status`` of the control server, every ``interval_s``, into ``status.jsonl``."""
    return JsonlSampler(path, lambda: trim_status(json.loads(_get(f"{admin_url}/status")), time.time()),
                        interval_s, name="status-sampler")


def read_triton_stats(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every replica's Triton statistics extension document (``GET /v2/models/stats``: per model
    and batch size the executions and their compute ns, cumulative) as ``{pool: {replica index:
    document}}``, kept as Triton wrote it (``router_lib.calibration_stats.parse_model_stats`` reads
    it).  A replica that does not answer is left out with a warning."""
    out: dict[str, dict[str, Any]] = {}
    for pool, rep, doc in _each_replica(status, "http_port", "/v2/models/stats", json.loads, "the statistics"):
        out.setdefault(pool, {})[str(rep.get("index", rep["http_port"]))] = doc
    return out


def pools_and_tiers(fleet: Any) -> tuple[tuple[PoolInfo, ...], tuple[TierInfo, ...]]:
    pools = tuple(PoolInfo(p.name, p.accelerator.value, p.instance_type, p.price_per_hour_usd, p.replicas, p.emulated)
                  for p in fleet.pools)
    tiers = tuple(TierInfo(name, t.p99_ms, t.target_compliance) for name, t in fleet.tiers.tiers.items())
    return pools, tiers


def record_run(platform: Any, out: Path, *, label: str, shape: str, duration_s: float, seed: int = 1,
               base_users: int = 12, simulate: bool = True, notes: tuple[str, ...] = (),
               start_phase: str = "spread", pacing: str = "random") -> RunData:
    """Run the mixed-tier locust workload against ``platform`` and record it in ``out``.

    ``start_phase``: when users added together send their first request; ``pacing``: how each user
    spaces its requests (``locustfiles.settings``); the run's notes say which.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in (REQUESTS, STATUS, RUN, PLAN, TRITON_STATS):
        (out / name).unlink(missing_ok=True)
    status = platform.status()
    warm_up(status)
    before, triton_before = scrape_counters(status)
    d = platform.describe()
    spec = LocustRun(d["http_endpoint"], d["grpc_endpoint"], shape=shape, duration_s=duration_s, seed=seed,
                     base_users=base_users, start_phase=start_phase, pacing=pacing)
    notes = (*notes, START_PHASE_NOTES[start_phase], PACING_NOTES[pacing])
    sampler = status_sampler(platform.admin_url, out / STATUS)
    stats_before = read_triton_stats(status)
    load_start = os.getloadavg()[0]
    started = time.time()
    sampler.start()
    try:
        proc = run_locust(spec, out, out / REQUESTS)
    finally:
        ended = time.time()
        sampler.stop()
    after, triton_after = scrape_counters(platform.status())
    (out / TRITON_STATS).write_text(json.dumps({"before": stats_before, "after": read_triton_stats(status)},
                                               separators=(",", ":")) + "\n")
    if proc.returncode != 0:
        raise RuntimeError(f"locust exited with {proc.returncode}; see {out / 'locust.log'}")
    schedule = replace(schedule_from_env(shape), duration_s=duration_s)  # what the locust subprocess ran
    emulation = _delta(after, before)
    pools, tiers = pools_and_tiers(platform.fleet)
    meta_run = RunData(label=label, shape=shape, started_unix_s=started, ended_unix_s=ended, pools=pools, tiers=tiers,
                       records=(), samples=(), schedule=tuple(schedule.changes()), emulation=emulation,
                       load_average=(round(load_start, 2), round(os.getloadavg()[0], 2)), cpu_cores=os.cpu_count() or 0,
                       notes=notes)
    meta = {**run_meta(meta_run), "triton": _delta(triton_after, triton_before)}
    (out / RUN).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    run = load_run(out)
    (out / PLAN).write_text(json.dumps(plan_for_run(run, platform.fleet, simulate_run=simulate), indent=1,
                                       sort_keys=True, default=str) + "\n")
    return load_run(out)
