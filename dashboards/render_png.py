"""Renders every dashboard's panels to PNG from a Prometheus, for people without Grafana.

Each panel's PromQL (read from the generated dashboard JSON, i.e. exactly what Grafana would run)
goes to Prometheus' range-query API; matplotlib draws one PNG per dashboard with the panels on a
two-column grid like Grafana's, threshold lines included. Grafana's variables are substituted:
`$pool`, `$model`, `$tier` -> `.*` (all), `$__rate_interval` -> --rate-interval.

    python -m dashboards.render_png --prometheus http://127.0.0.1:9090 --out build/dashboards
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GENERATED = Path(__file__).resolve().parent / "generated"
_LEGEND_FIELD = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Series:
    legend: str
    times: list[float]
    values: list[float]


def substitute_variables(expr: str, rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$\{?(pool|model|tier)\}?", ".*", expr)


def legend_for(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return _LEGEND_FIELD.sub(lambda m: labels.get(m.group(1), ""), fmt)


def query_range(prometheus: str, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s})
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus rejected {expr!r}: {body.get('error')}")
    return body["data"]["result"]  # type: ignore[no-any-return]


def panel_series(prometheus: str, panel: dict[str, Any], start: float, end: float, step_s: float,
                 rate_interval: str) -> list[Series]:
    out = []
    for target in panel.get("targets", []):
        expr = substitute_variables(target["expr"], rate_interval)
        for result in query_range(prometheus, expr, start, end, step_s):
            points = [(float(t), float(v)) for t, v in result["values"]]
            out.append(Series(legend_for(target.get("legendFormat", ""), result["metric"]),
                              [t - end for t, _ in points], [v for _, v in points]))
    return out


def _thresholds(panel: dict[str, Any]) -> list[float]:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [s["value"] for s in steps if s.get("value") is not None]


def draw_dashboard(dashboard: dict[str, Any], series_by_panel: list[list[Series]], out: Path, note: str = "") -> None:
    panels = dashboard["panels"]
    rows = math.ceil(len(panels) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.4 * rows), squeeze=False)
    fig.suptitle(dashboard["title"] + (f"\n{note}" if note else ""), fontsize=13, fontweight="bold")
    span_s = max((-min(s.times) for series in series_by_panel for s in series if s.times), default=0.0)
    scale, x_unit = (60.0, "minutes") if span_s >= 120 else (1.0, "seconds")
    for ax, panel, series in zip(axes.flat, panels, series_by_panel, strict=False):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(f"{panel['title']}" + (f"  [{unit}]" if unit and unit != "short" else ""), fontsize=10)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif panel["type"] == "stat":
            text = "\n".join(f"{s.legend}: {s.values[-1]:.4g}" for s in series[:6] if s.values)
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            for s in series[:12]:
                ax.plot([t / scale for t in s.times], s.values, label=s.legend, linewidth=1.2)
            for value in _thresholds(panel):
                ax.axhline(value, color="red", linestyle="--", linewidth=0.8)
            ax.set_xlabel(f"{x_unit} before now", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
            ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def render(prometheus: str, out_dir: Path, range_s: float, step_s: float, rate_interval: str,
           dashboards_dir: Path = GENERATED, note: str = "") -> dict[Path, list[str]]:
    """Writes one PNG per dashboard; returns, per PNG, the titles of the panels that had no data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    end = time.time()
    written = {}
    for path in sorted(dashboards_dir.glob("*.json")):
        dashboard = json.loads(path.read_text())
        series = [panel_series(prometheus, p, end - range_s, end, step_s, rate_interval) for p in dashboard["panels"]]
        target = out_dir / f"{path.stem}.png"
        draw_dashboard(dashboard, series, target, note)
        written[target] = [p["title"] for p, s in zip(dashboard["panels"], series, strict=True) if not s]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--out", type=Path, default=Path("build/dashboards"))
    parser.add_argument("--range-s", type=float, default=1800, help="how far back to plot")
    parser.add_argument("--step-s", type=float, default=15)
    parser.add_argument("--rate-interval", default="1m", help="stands for Grafana's $__rate_interval")
    parser.add_argument("--note", default="", help="a line under each title, e.g. where the data came from")
    args = parser.parse_args(argv)
    rendered = render(args.prometheus, args.out, args.range_s, args.step_s, args.rate_interval, note=args.note)
    for path, empty in rendered.items():
        print(path, f"(no data: {', '.join(empty)})" if empty else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
