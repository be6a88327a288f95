"""``python -m tracing receive | waterfall``.

- ``receive --out FILE [--host H] [--port P]``: the local OTLP/HTTP receiver (``tracing.receiver``);
  prints one JSON line ``{"endpoint": ...}`` once it listens, serves until stdin closes or SIGTERM.
- ``waterfall --spans FILE --out PNG [--tier gold] [--trace-id ID]``: the slowest traced request of
  a tier (or one trace) as a waterfall PNG.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from tracing.receiver import OtlpReceiver
from tracing.traces import group_traces, read_spans, slowest
from tracing.waterfall import write_waterfall


def cmd_receive(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with OtlpReceiver(args.out, host=args.host, port=args.port) as receiver:
        print(json.dumps({"endpoint": receiver.endpoint, "out": str(receiver.out)}), flush=True)
        if args.until_stdin_closes:
            def wait_for_eof() -> None:
                sys.stdin.read()
                stop.set()

            threading.Thread(target=wait_for_eof, daemon=True).start()
        stop.wait()
    return 0


def cmd_waterfall(args: argparse.Namespace) -> int:
    traces = group_traces(read_spans(args.spans))
    if args.trace_id:
        trace = traces.get(args.trace_id)
        if trace is None:
            print(f"no spans of trace {args.trace_id} in {args.spans}", file=sys.stderr)
            return 1
    else:
        trace = slowest(traces.values(), tier=args.tier)
        if trace is None:
            print(f"no linked Envoy->Triton trace of tier {args.tier!r} in {args.spans}", file=sys.stderr)
            return 1
    path = write_waterfall(trace, args.out, title=f"trace {trace.trace_id}")
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracing", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receive", help="the local OTLP/HTTP receiver: spans as JSON lines")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=4318, help="0: any free port (printed)")
    r.add_argument("--until-stdin-closes", action="store_true", help="stop when the parent closes stdin")
    r.set_defaults(fn=cmd_receive)
    w = sub.add_parser("waterfall", help="a trace as a waterfall PNG")
    w.add_argument("--spans", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--tier", default="gold")
    w.add_argument("--trace-id", default=None)
    w.set_defaults(fn=cmd_waterfall)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
