"""Writes the Grafana dashboard JSON (dashboards/generated/*.json) with grafana-foundation-sdk.

`python -m dashboards.build` rewrites the files; `--check` fails when they differ from what the
definitions produce (tests/deploy/test_dashboards.py). Grafana picks them up through the
`grafana-dashboards` ConfigMap that k8s/base/kustomization.yaml generates from these files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard

from dashboards.definitions import DASHBOARDS, Dashboard, Panel

OUT_DIR = Path(__file__).resolve().parent / "generated"
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
PANEL_WIDTH = 12  # two panels per row on Grafana's 24-column grid
PANEL_HEIGHT = 8


def _variable(name: str, label_query: str) -> dash_b.QueryVariable:
    return (dash_b.QueryVariable(name).label(name).datasource(DATASOURCE)
            .query(label_query).refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True).all_value(".*").multi(True)
            .current(dashboard.VariableOption(selected=True, text="All", value="$__all")))


def _thresholds(panel: Panel) -> dash_b.ThresholdsConfig:
    steps = [dashboard.Threshold(value=None, color="green")]
    steps += [dashboard.Threshold(value=v, color="red") for v in sorted(panel.thresholds)]
    return dash_b.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(steps)


def build_panel(panel: Panel, panel_id: int):  # type: ignore[no-untyped-def]
    builder = stat.Panel() if panel.kind == "stat" else timeseries.Panel()
    builder = (builder.id(panel_id).title(panel.title).datasource(DATASOURCE).unit(panel.unit)
               .height(PANEL_HEIGHT).span(PANEL_WIDTH).thresholds(_thresholds(panel)))
    if panel.description:
        builder = builder.description(panel.description)
    if panel.kind != "stat" and panel.thresholds:
        builder = builder.thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
    for i, query in enumerate(panel.queries):
        builder = builder.with_target(prometheus.Dataquery().expr(query.expr)
                                      .legend_format(query.legend).ref_id(chr(ord("A") + i)))
    return builder


def build_dashboard(d: Dashboard) -> dict:  # type: ignore[type-arg]
    builder = (dash_b.Dashboard(d.title).uid(d.uid).description(d.description)
               .tags(["inference-platform"]).refresh("30s").time("now-1h", "now").timezone("utc")
               .readonly()
               .with_variable(dash_b.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
               .with_variable(_variable("pool", "label_values(router_pool_healthy, pool)"))
               .with_variable(_variable("model", "label_values(router_route_weight, model)"))
               .with_variable(_variable("tier", "label_values(router_route_weight, tier)")))
    for panel_id, panel in enumerate(d.panels, start=1):
        builder = builder.with_panel(build_panel(panel, panel_id))
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def render_all() -> dict[Path, str]:
    return {OUT_DIR / f"{name}.json": json.dumps(build_dashboard(d), indent=2, sort_keys=True) + "\n"
            for name, d in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated files are stale")
    args = parser.parse_args(argv)
    outputs = render_all()
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.name} (run: python -m dashboards.build)", file=sys.stderr)
        return 1 if stale else 0
    OUT_DIR.mkdir(exist_ok=True)
    for p, text in outputs.items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
