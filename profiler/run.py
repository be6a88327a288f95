"""One profile run: benchmark a model on a Triton (started here, or at a given URL), analyse the
sweep, and produce the profile document and the run's results.

This is the glue between the edges (``local_triton``, ``bench``) and the pure parts (``analysis``,
``profile_io.profile_document``): read, compute, return.  Writing files is the caller's choice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model_repository.definitions import ModelDefinition
from profiler.analysis import Point, ServerTimes, TierCapacity, capacity_by_tier, latency_table_ms, tail_ratio
from profiler.bench import ServerInfo, SweepPlan, server_info, sweep
from profiler.inputs import describe
from profiler.local_triton import local_triton
from profiler.profile_io import profile_document, sha256_of, this_machine
from router_lib.domain import Prices, TierSet


@dataclass(frozen=True)
class ProfileRun:
    model: str
    target: str  # e.g. "cpu/onnxruntime:fp32"
    url: str  # "local" when started here
    server: ServerInfo
    artifact: str
    artifact_sha256: str
    plan: SweepPlan
    points: tuple[Point, ...]
    capacities: tuple[TierCapacity, ...]
    price_per_hour_usd: float
    instance_type: str
    document: dict[str, Any]
    payload: str


def headline_server_times(point: Point, model: ModelDefinition) -> ServerTimes:
    """Queue and compute per request for the model as a whole.  An ensemble's own statistics carry
    its steps' compute but report zero queue, so queue (and compute) are summed over its steps."""
    if not model.composing_models:
        return point.server[model.name]
    steps = [point.server[m] for m in model.composing_models]
    acc = point.server[model.accelerated.name]
    return ServerTimes(requests=point.server[model.name].requests, queue_ms=sum(s.queue_ms for s in steps),
                       compute_ms=sum(s.compute_ms for s in steps),
                       compute_infer_ms=sum(s.compute_infer_ms for s in steps),
                       executions=acc.executions, inferences=acc.inferences)


@contextlib.contextmanager
def _server(model: ModelDefinition, artifacts: Path, url: str | None, instances: int,
            variant_path: Path | None) -> Iterator[str]:
    if url:
        yield url
        return
    with local_triton(model, artifacts, instances, variant_path) as server:
        yield server.grpc_url


def profile_model(model: ModelDefinition, artifacts: Path, plan: SweepPlan, *, tiers: TierSet, prices: Prices,
                  instance_type: str, accelerator: str = "cpu", instances: int = 1, url: str | None = None,
                  variant: str = "fp32", variant_path: Path | None = None,
                  progress: Callable[[tuple[int, int]], None] = lambda _: None,
                  client_options: Mapping[str, Any] | None = None) -> ProfileRun:
    """Benchmark ``model`` and build its profile.  With ``url`` the server is remote and must already
    serve the artifact named by ``variant_path`` (or the built one): its hash is what we record.
    ``client_options``: keyword arguments of every gRPC client (mTLS to a remote replica)."""
    artifact = variant_path or artifacts / model.accelerated.artifact
    for b in plan.batch_sizes:
        if b > model.max_batch_size:
            raise ValueError(f"batch size {b} above {model.name}'s max_batch_size {model.max_batch_size}")
    if 1 not in plan.concurrencies:
        raise ValueError("the sweep needs concurrency 1: the profile's latency table is measured there")
    with _server(model, artifacts, url, instances, variant_path) as grpc_url:
        info = server_info(grpc_url, model, client_options)
        points = tuple(sweep(grpc_url, model, artifacts, plan, progress, client_options))
    price = prices.of(instance_type)
    capacities = tuple(capacity_by_tier(points, tiers, price))
    target = f"{accelerator}/onnxruntime:{variant}"
    doc = profile_document(
        model=model.name, accelerator=accelerator, instance_type=instance_type,
        instances_per_replica=info.instances, max_batch_size=model.max_batch_size,
        latency_ms_by_batch=latency_table_ms(points), p99_over_p50=tail_ratio(points),
        machine=this_machine(instance_type), triton_version=info.triton_version,
        model_version=info.model_version, artifact_sha256=sha256_of(artifact),
        source=(f"python -m profiler profile: {target}, {info.instances} instance(s), Triton at "
                f"{'127.0.0.1 (started by the profiler)' if url is None else url}; payload: {describe(model)}; "
                f"batch sizes {list(plan.batch_sizes)} at concurrency 1, {plan.measure_s:g} s windows after "
                f"{plan.warmup_s:g} s warm-up"),
    )
    return ProfileRun(model.name, target, url or "local", info, artifact.name, doc["provenance"]["artifact_sha256"],
                      plan, points, capacities, price, instance_type, doc, describe(model))


def run_record(run: ProfileRun, model: ModelDefinition) -> dict[str, Any]:
    """The run as JSON-ready data (results files and the plot read this)."""
    def point(p: Point) -> dict[str, Any]:
        head = headline_server_times(p, model)
        return {
            "batch_size": p.batch_size, "concurrency": p.concurrency, "measure_s": round(p.measure_s, 3),
            "requests": p.requests, "errors": p.errors,
            "p50_ms": p.p50_ms, "p90_ms": p.p90_ms, "p95_ms": p.p95_ms, "p99_ms": p.p99_ms, "mean_ms": p.mean_ms,
            "requests_per_s": p.requests_per_s, "inferences_per_s": p.inferences_per_s,
            "server_queue_ms": head.queue_ms, "server_compute_ms": head.compute_ms,
            "server_avg_execution_batch": head.avg_execution_batch,
            "server_by_model": {m: {**asdict(s), "avg_execution_batch": s.avg_execution_batch}
                                for m, s in p.server.items()},
        }

    return {
        "model": run.model, "target": run.target, "url": run.url, "server": asdict(run.server),
        "artifact": run.artifact, "artifact_sha256": run.artifact_sha256, "payload": run.payload,
        "plan": asdict(run.plan), "instance_type": run.instance_type, "price_per_hour_usd": run.price_per_hour_usd,
        "points": [point(p) for p in run.points],
        "tiers": [{"tier": c.tier, "p99_bound_ms": c.p99_bound_ms,
                   "batch_size": c.point.batch_size if c.point else None,
                   "concurrency": c.point.concurrency if c.point else None,
                   "p99_ms": c.point.p99_ms if c.point else None,
                   "inferences_per_s": c.inferences_per_s,
                   "usd_per_million_inferences": c.usd_per_million_inferences} for c in run.capacities],
        "profile": run.document,
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [f"## {record['model']} on {record['target']} ({record['server']['instances']} instance(s), "
             f"Triton {record['server']['triton_version']})", "",
             f"Payload: {record['payload']}. Artifact `{record['artifact']}` sha256 `{record['artifact_sha256'][:16]}...`.",
             "", "| batch | conc. | requests | p50 ms | p99 ms | inferences/s | server queue ms | server compute ms | exec batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in record["points"]:
        lines.append(f"| {p['batch_size']} | {p['concurrency']} | {p['requests']}{' (' + str(p['errors']) + ' err)' if p['errors'] else ''} "
                     f"| {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['inferences_per_s']:.1f} | {p['server_queue_ms']:.2f} "
                     f"| {p['server_compute_ms']:.2f} | {p['server_avg_execution_batch']:.1f} |")
    lines += ["", f"Highest measured load within each tier's p99 bound (one replica; {record['instance_type']} at "
              f"${record['price_per_hour_usd']}/h):", "",
              "| tier | p99 bound ms | batch | conc. | p99 ms | inferences/s | $ per 1M inferences |", "|---|---|---|---|---|---|---|"]
    for t in record["tiers"]:
        if t["batch_size"] is None:
            lines.append(f"| {t['tier']} | {t['p99_bound_ms']} | - | - | - | 0 | no measured setting meets it |")
        else:
            lines.append(f"| {t['tier']} | {t['p99_bound_ms'] if t['p99_bound_ms'] is not None else 'none'} | {t['batch_size']} "
                         f"| {t['concurrency']} | {t['p99_ms']:.1f} | {t['inferences_per_s']:.1f} "
                         f"| {t['usd_per_million_inferences']:.3g} |")
    prof = record["profile"]
    lines += ["", f"Profile: latency_ms_by_batch {prof['latency_ms_by_batch']}, p99_over_p50 {prof['p99_over_p50']}."]
    return "\n".join(lines)
