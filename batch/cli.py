"""``python -m batch``: submit, status, wait, cancel, results, list, worker, serve.

The store is a folder (``--store``, or ``$BATCH_STORE``, default ``build/batch``); every command
and every worker pointed at the same folder sees the same jobs.  Workers find Envoy and the
control server from a running local platform (``--platform build/run/platform.json``, what
``make up`` writes) or from ``--endpoint`` / ``--control``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from batch.backpressure import ThrottleSettings
from batch.inputs import StrictInputError
from batch.jobs import JobState
from batch.metrics import StoreCollector, WorkerMetrics
from batch.service import BATCH_TIERS, status_dict, status_text, submit
from batch.store import NotReady, UnknownJob
from batch.store_sqlite import SqliteJobStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = os.environ.get("BATCH_STORE", str(PROJECT_ROOT / "build" / "batch"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=DEFAULT_STORE,
                   help="a folder (SQLite + files; default: %(default)s) or s3://BUCKET[/PREFIX]?queue=QUEUE_PREFIX"
                        "[&endpoint=URL] (SQS + S3; AWS credentials from the usual chain)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="submit a JSONL file; prints the job id")
    s.add_argument("--model", required=True)
    s.add_argument("--input", required=True, type=Path, help="JSONL: one object per line, 'id' + the model's inputs")
    s.add_argument("--tier", default="bronze", choices=BATCH_TIERS)
    s.add_argument("--priority", default="normal", help="low | normal | high | 0-9 (default: normal)")
    s.add_argument("--strict", action="store_true", help="refuse the whole file if any line is malformed")

    s = sub.add_parser("status", help="progress, rows done/failed, rate, ETA, cost so far")
    s.add_argument("job")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("wait", help="wait for a job with a progress bar")
    s.add_argument("job")
    s.add_argument("--timeout-s", type=float, default=None)

    s = sub.add_parser("cancel", help="cancel a job (rows written so far stay)")
    s.add_argument("job")

    s = sub.add_parser("results", help="write the result file: one line per input row, input order")
    s.add_argument("job")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--partial", action="store_true", help="what is written so far, for an unfinished job")

    sub.add_parser("list", help="every job, one line each")

    s = sub.add_parser("worker", help="serve jobs through Envoy as bronze requests, with back-pressure")
    s.add_argument("--platform", type=Path, help="a running local platform's platform.json (endpoints)")
    s.add_argument("--endpoint", help="Envoy's KServe HTTP endpoint, host:port")
    s.add_argument("--control", help="the control server's admin URL (headroom); omitted: AIMD only")
    s.add_argument("--fleet", type=Path, default=PROJECT_ROOT / "fleet.yaml")
    s.add_argument("--senders", type=int, default=4, help="sender threads (most requests in flight)")
    s.add_argument("--max-batch", type=int, default=32, help="most rows per request (the model's maximum caps it)")
    s.add_argument("--per-try-timeout-s", type=float, default=10.0,
                   help="a request slower than this is back-pressure; batches are sized to stay well inside it")
    s.add_argument("--lease-s", type=float, default=60.0, help="a dead worker's rows are resent after this")
    s.add_argument("--drain-target-s", type=float, default=600.0,
                   help="ask the capacity decider for each job's remaining rows over this many seconds "
                        "(it may scale pools out within the budget); 0: ask for nothing, take the spare there is")
    s.add_argument("--exit-when-idle", action="store_true", help="exit once no job has rows left")
    s.add_argument("--api-port", type=int, help="also serve the jobs HTTP API and /metrics on this port")
    s.add_argument("--api-host", default="127.0.0.1", help="address of the API (0.0.0.0 in a pod)")
    s.add_argument("--model", action="append", dest="models", help="serve only this model's jobs (repeatable)")

    s = sub.add_parser("serve", help="the jobs HTTP API and /metrics, without sending anything")
    s.add_argument("--port", type=int, default=8090)
    s.add_argument("--host", default="127.0.0.1")
    return p


def _models():  # type: ignore[no-untyped-def]
    from model_repository.definitions import load_models
    return load_models()


def open_store(spec: str):  # type: ignore[no-untyped-def]
    """A folder -> the SQLite store; ``s3://bucket/prefix?queue=name[&endpoint=url]`` -> the AWS store."""
    if not spec.startswith("s3://"):
        return SqliteJobStore(spec)
    from urllib.parse import parse_qs, urlparse

    from batch.store_aws import AwsJobStore, AwsNames
    url = urlparse(spec)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    if not url.netloc or "queue" not in query:
        raise ValueError(f"--store {spec!r}: expected s3://BUCKET[/PREFIX]?queue=QUEUE_PREFIX[&endpoint=URL]")
    return AwsJobStore(AwsNames(url.netloc, query["queue"], url.path.strip("/")), endpoint_url=query.get("endpoint"),
                       region=query.get("region"))


def _bar(fraction: float, width: int = 30) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        store = open_store(args.store)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run(args, store)
    except UnknownJob as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (NotReady, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, store: Any) -> int:
    if args.command == "submit":
        if not args.input.is_file():
            raise ValueError(f"--input {args.input}: no such file")
        try:
            with open(args.input, encoding="utf-8", errors="replace") as f:
                job = submit(store, _models(), model=args.model, lines=f, tier=args.tier, priority=args.priority,
                             strict=args.strict, source=str(args.input))
        except StrictInputError as e:
            for p in e.problems:
                print(f"{args.input}:{p.line}: {p.reason}", file=sys.stderr)
            print(f"error: {len(e.problems)} malformed line(s); nothing submitted (--strict)", file=sys.stderr)
            return 2
        view = store.job(job)
        for n, reason in view.invalid_lines:
            print(f"{args.input}:{n}: {reason} (line left out)", file=sys.stderr)
        print(f"{view.rows_total} rows, {len(view.invalid_lines)} malformed line(s) left out", file=sys.stderr)
        print(job)
        return 0
    if args.command == "status":
        view = store.job(args.job)
        print(json.dumps(status_dict(view, time.time()), indent=1) if args.json else status_text(view, time.time()))
        return 0
    if args.command == "list":
        for view in store.jobs():
            print(f"{view.job_id}  {view.model:<18} {view.tier:<7} {view.state.value:<10}"
                  f" {view.rows_written}/{view.rows_total}")
        return 0
    if args.command == "wait":
        return _wait(store, args.job, args.timeout_s)
    if args.command == "cancel":
        view = store.cancel(args.job)
        print(f"{view.job_id} {view.state.value}: {view.rows_written} of {view.rows_total} rows written")
        return 0
    if args.command == "results":
        n = store.export_results(args.job, args.out, partial=args.partial)
        print(f"{n} rows written to {args.out}", file=sys.stderr)
        return 0
    if args.command == "serve":
        return _serve(store, args)
    if args.command == "worker":
        return _worker(store, args)
    raise AssertionError(args.command)


def _wait(store: Any, job: str, timeout_s: float | None) -> int:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    tty = sys.stderr.isatty()
    last_line = ""
    while True:
        view = store.job(job)
        p = view.progress(time.time())
        eta = "" if p.eta_s is None else f" ETA {p.eta_s:.0f}s"
        line = (f"{_bar(p.fraction)} {view.rows_written}/{view.rows_total} ({p.fraction:.1%})"
                f" {p.rows_per_s:.1f} rows/s{eta} failed {view.rows_failed} ${view.cost_usd:.6f}")
        if tty:
            print("\r" + line.ljust(len(last_line)), end="", file=sys.stderr, flush=True)
        elif line != last_line:
            print(line, file=sys.stderr, flush=True)
        last_line = line
        if view.state.terminal:
            if tty:
                print(file=sys.stderr)
            print(f"{job} {view.state.value}")
            return 0 if view.state is JobState.COMPLETED else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"\n{job} still {view.state.value} after {timeout_s:g}s", file=sys.stderr)
            return 3
        time.sleep(1.0)


def _serve(store: Any, args: argparse.Namespace) -> int:
    from batch.http_api import JobsApi
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    api = JobsApi(store, _models(), registry, port=args.port, host=args.host)
    print(f"jobs API on http://{args.host}:{api.port}", flush=True)
    stop = _stop_on_signals()
    api.start()
    while not stop():
        time.sleep(0.5)
    api.stop()
    return 0


def _stop_on_signals():  # type: ignore[no-untyped-def]
    flag = {"stop": False}

    def handler(signum: int, frame: object) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: flag["stop"]


def _worker(store: Any, args: argparse.Namespace) -> int:
    from batch.worker import ControlStatusHeadroom, Worker, WorkerSettings
    from router_lib.config import load_fleet

    endpoint, control = args.endpoint, args.control
    if args.platform:
        described = json.loads(args.platform.read_text())
        endpoint = endpoint or described["http_endpoint"]
        control = control or described["control_admin"]
    if not endpoint:
        raise ValueError("say where Envoy is: --platform build/run/platform.json or --endpoint host:port")
    models = _models()
    fleet = load_fleet(args.fleet, tuple(models))
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    registry.register(StoreCollector(store))
    if args.drain_target_s < 0 or args.drain_target_s != args.drain_target_s:
        raise ValueError(f"--drain-target-s must be >= 0 (0: ask for no capacity), got {args.drain_target_s}")
    if args.lease_s <= args.per_try_timeout_s:
        print(f"warning: --lease-s {args.lease_s:g} <= --per-try-timeout-s {args.per_try_timeout_s:g}: a slow request's "
              "rows can be claimed again while it runs (answered once in the results, but the pool does the work twice)",
              file=sys.stderr, flush=True)
    settings = WorkerSettings(senders=args.senders, lease_s=args.lease_s, drain_target_s=args.drain_target_s or None,
                              throttle=ThrottleSettings(max_in_flight=args.senders, max_batch=args.max_batch,
                                                        per_try_timeout_s=args.per_try_timeout_s))
    worker = Worker(store=store, endpoint=endpoint, fleet=fleet, models=models,
                    headroom=ControlStatusHeadroom(control, fleet) if control else None, settings=settings,
                    metrics=metrics, only_models=args.models)
    api = None
    if args.api_port is not None:
        from batch.http_api import JobsApi
        api = JobsApi(store, models, registry, port=args.api_port, host=args.api_host)
        print(f"jobs API on http://{args.api_host}:{api.start()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print(f"worker {worker.worker_id}: Envoy {endpoint}, control {control or '(none: AIMD only)'}", flush=True)
    try:
        worker.run(exit_when_idle=args.exit_when_idle)
    except KeyboardInterrupt:
        worker.stop()
    finally:
        if api is not None:
            api.stop()
    return 0
