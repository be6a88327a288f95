"""Which metric names a PromQL expression reads, and which names the platform exports.

Used by tests/deploy to check that dashboards, alert rules and KEDA queries read only metrics that
exist: the names in router_lib/metric_names.py (the contract), the recording rules of
alerts/rules.yaml, or — when a running platform is at hand — the names its /metrics pages serve.
The PromQL scan is deliberately small (strings, label matchers and grouping clauses removed, then
identifiers not followed by "(" and not PromQL keywords) and is tested on the project's own queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from router_lib import metric_names

REPO = Path(__file__).resolve().parent.parent

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_NUMBER_SUFFIX = re.compile(r"(?<=\d)e\d+")  # 1e6: keep "e6" from reading as a name

# Series names a histogram or summary exposes besides its base name.
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def metric_names_in(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _GROUPING.sub("", text)
    text = _RANGE.sub("", text)
    text = _NUMBER_SUFFIX.sub("", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def _with_series_suffixes(names: Iterable[str]) -> set[str]:
    out = set()
    for name in names:
        out.add(name)
        out.update(name + s for s in _HISTOGRAM_SUFFIXES)
    return out


def contract_names() -> set[str]:
    """Every series name the platform exports or reads, per router_lib/metric_names.py."""
    exported = [*metric_names.CONTROL_PLANE, *metric_names.EMULATION, *metric_names.BATCH]
    read = [*metric_names.TRITON_READ, *metric_names.ENVOY_READ]
    # `up` is Prometheus' own per-target series.
    return _with_series_suffixes([*exported, *read]) | {"up"}


def recording_rule_names(rules_file: Path = REPO / "alerts" / "rules.yaml") -> set[str]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def names_on_metrics_page(text: str) -> set[str]:
    """Series names on a Prometheus text-format /metrics page (what a running platform exports)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                base, kind = parts[2], parts[3]
                names.add(base)
                if kind in ("histogram", "summary"):
                    names.update(base + s for s in _HISTOGRAM_SUFFIXES)
                if kind == "counter" and not base.endswith("_total"):
                    names.add(base + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
