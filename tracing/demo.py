"""Traces in the routing demo: every request traced, and the slowest gold request as a waterfall.

``DemoTraces.start`` runs the OTLP receiver as its own process (the demo's load generator shares
this one, and decoding spans must not slow it down) and sets the OTEL_* environment before the
platform starts, so Envoy, every Triton and the control server export to it.  ``finish`` (after
the platform stopped, so the last batches are in) picks the slowest traced gold request whose
Envoy and Triton spans are linked, draws it, and adds a section to the report.

The demo samples every request (``sample_ratio=1``): its load is tens of requests a second, and
"the slowest gold request" should be the slowest one, not the slowest of a sample.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tracing.settings import TracingSettings
from tracing.traces import ENVOY_SERVICE, TRITON_SERVICE, Trace, group_traces, read_spans, slowest
from tracing.waterfall import write_waterfall

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
WATERFALL_PNG = "slowest_gold_trace.png"


@dataclass
class DemoTraces:
    spans_path: Path
    process: subprocess.Popen[str]
    settings: TracingSettings
    saved_env: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def start(cls, out: Path, *, sample_ratio: float = 1.0) -> DemoTraces:
        spans_path = out / "traces.jsonl"
        spans_path.unlink(missing_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "tracing", "receive", f"--out={spans_path}", "--port=0", "--until-stdin-closes"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PACKAGE_ROOT,
            env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
        )
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            process.kill()
            raise RuntimeError("the OTLP receiver (python -m tracing receive) did not start")
        settings = TracingSettings(endpoint=json.loads(line)["endpoint"], sample_ratio=sample_ratio)
        traces = cls(spans_path, process, settings)
        for key, value in settings.to_env().items():
            traces.saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        return traces

    def stop(self) -> None:
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = {}
        if self.process.poll() is None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def finish(self, out: Path, report_md: Path | None = None) -> str:
        """Stop the receiver, draw the slowest gold request, append the section to ``report_md``;
        -> the section's Markdown."""
        self.stop()
        section = traces_section(self.spans_path, out)
        if report_md is not None and report_md.exists():
            with open(report_md, "a") as f:
                f.write("\n" + section)
        return section


def _describe(trace: Trace) -> list[str]:
    edge = trace.edge_span()
    assert edge is not None
    took_ms = (edge["end_ns"] - edge["start_ns"]) / 1e6
    triton = [s for s in trace.of_service(TRITON_SERVICE) if s["name"] == "InferRequest"]
    inside_ms = sum(s["end_ns"] - s["start_ns"] for s in triton) / 1e6
    cluster = edge["attributes"].get("upstream_cluster", "?")
    return [f"- trace `{trace.trace_id}`: {took_ms:.1f} ms at Envoy, of which {inside_ms:.1f} ms inside Triton "
            f"(`InferRequest`); upstream cluster `{cluster}`; {len(trace.spans)} spans."]


def traces_section(spans_path: Path, out: Path) -> str:
    spans = read_spans(spans_path)
    traces = group_traces(spans)
    services = sorted({s["service"] for s in spans})
    edge_traced = [t for t in traces.values() if t.edge_span() is not None]
    lines = ["## Traces (OpenTelemetry)", "",
             f"{len(spans)} spans in {len(traces)} traces from {', '.join(services) or 'nothing'} "
             f"(`{spans_path.name}`; every request sampled in this demo; docs/tracing.md)."]
    best = slowest(traces.values(), tier="gold")
    if best is None:
        lines.append(f"No linked Envoy -> Triton trace of a gold request was received ({len(edge_traced)} traces "
                     f"had an {ENVOY_SERVICE} span).")
        return "\n".join(lines) + "\n"
    png = write_waterfall(best, out / WATERFALL_PNG, title=f"slowest gold request: trace {best.trace_id}")
    lines += ["", "The slowest gold request, as a waterfall:", *_describe(best), "",
              f"![slowest gold request]({os.path.relpath(png, out)})", ""]
    return "\n".join(lines)
