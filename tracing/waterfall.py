"""A trace as a waterfall PNG: one bar per span, indented by depth, coloured by service.

Time runs left to right from the trace's first span; each bar is labelled with its service, name
and duration; a Triton model span shows its time queued (hatched: from its ``QUEUE_START`` event to
its ``compute`` child's start), and ``compute`` spans their input / infer / output phases (ticks).  matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from tracing.traces import Span, Trace  # noqa: E402

COLOURS = {"envoy-gateway": "#4c72b0", "triton": "#55a868", "control-server": "#c44e52"}


def _label(span: Span) -> str:
    took_ms = (span["end_ns"] - span["start_ns"]) / 1e6
    attrs = span["attributes"]
    where = attrs.get("upstream_cluster") or attrs.get("triton.model_name") or ""
    instance = f" ({where})" if where and where not in span["name"] else ""
    return f"{span['service']}: {span['name']}{instance}  {took_ms:.2f} ms"


def _ordered(trace: Trace) -> list[Span]:
    """Depth-first from the roots, children by start time: a parent sits right above its children."""
    out: list[Span] = []

    def visit(span: Span) -> None:
        out.append(span)
        for child in trace.children(span):
            visit(child)

    for root in trace.roots():
        visit(root)
    return out


def write_waterfall(trace: Trace, path: Path | str, *, title: str) -> Path:
    path = Path(path)
    spans = _ordered(trace)
    t0 = min(s["start_ns"] for s in spans)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(spans) + 1.4))
    for row, span in enumerate(spans):
        start_ms, took_ms = (span["start_ns"] - t0) / 1e6, (span["end_ns"] - span["start_ns"]) / 1e6
        colour = COLOURS.get(span["service"], "#8172b2")
        ax.barh(row, max(took_ms, 0.005), left=start_ms, color=colour, edgecolor="black", linewidth=0.4)
        ax.text(start_ms, row - 0.38, "  " * trace.depth(span) + _label(span), fontsize=7.5, va="bottom")
        queued = [e["time_ns"] for e in span.get("events", []) if e["name"] == "QUEUE_START"]
        computes = [c for c in trace.children(span) if c["name"] == "compute"]
        if queued and computes:  # a Triton model span: waiting in the model's queue, then computing
            q_ms, c_ms = (queued[0] - t0) / 1e6, (computes[0]["start_ns"] - t0) / 1e6
            if c_ms > q_ms:
                ax.barh(row, c_ms - q_ms, left=q_ms, color="white", edgecolor="black", hatch="///", linewidth=0.4)
        if span["name"] == "compute":  # Triton's phases: input copy, inference, output copy
            marks = {e["name"]: (e["time_ns"] - t0) / 1e6 for e in span.get("events", [])}
            for name in ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"):
                if name in marks:
                    ax.plot([marks[name]] * 2, [row - 0.4, row + 0.4], color="black", linewidth=0.8)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the trace's first span")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(len(spans) - 0.4, -1.0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="///"))
    ax.legend(handles, [*COLOURS, "queued in Triton"], loc="lower right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
