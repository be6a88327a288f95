"""Dashboards, offline: generated JSON up to date, queries read only names of the metric contract
(router_lib/metric_names.py), and the PNG renderer draws every panel from a real Prometheus scraping
a fake exporter (synthetic values).

Whether the running platform really serves those names is checked against the real processes in
tests/platform/test_end_to_end.py (dashboards and alerts; the contract and the fake exporter),
which `make test` runs; no check here needs a platform.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dashboards.definitions import DASHBOARDS
from dashboards.promql_names import contract_names, metric_names_in, recording_rule_names
from localnet.ports import free_port
from tests.deploy.conftest import REPO, deploy_tool, run, system_tool
from tests.deploy.fake_exporter import FakeExporter

GENERATED = REPO / "dashboards" / "generated"


def all_queries() -> list[tuple[str, str]]:
    return [(f"{d.uid}: {p.title}", q.expr) for d in DASHBOARDS.values() for p in d.panels for q in p.queries]


def test_generated_json_is_up_to_date() -> None:
    """dashboards/generated/*.json is what `python -m dashboards.build` makes from the definitions."""
    p = run([deploy_tool("python"), "-m", "dashboards.build", "--check"])
    assert p.returncode == 0, p.stderr


def test_generated_json_holds_the_defined_queries() -> None:
    """The generated JSON holds exactly the PromQL of dashboards/definitions.py, no more, no less."""
    in_json = {t["expr"] for f in GENERATED.glob("*.json") for p in json.loads(f.read_text())["panels"]
               for t in p["targets"]}
    assert in_json == {expr for _, expr in all_queries()}


@pytest.mark.parametrize(("expr", "names"), [
    ("sum by (pool) (rate(nv_inference_count{pool=~\"$pool\"}[$__rate_interval])) / 1e6", {"nv_inference_count"}),
    ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 1", {"x_bucket"}),
    ("a * on (model, tier) group_left b or vector(0)", {"a", "b"}),
    ("time() - max(xds_last_push_timestamp_seconds)", {"xds_last_push_timestamp_seconds"}),
    ("tier:sla_latency_slow:ratio_rate1h / 0.01", {"tier:sla_latency_slow:ratio_rate1h"}),
], ids=["rate-division", "histogram", "vector-matching", "function-only", "recording-rule"])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    """The PromQL scan finds the metric names and nothing else (functions, keywords, labels, numbers)."""
    assert metric_names_in(expr) == names


def test_dashboards_read_only_metrics_the_platform_exports() -> None:
    """Every panel queries only names of the contract or recording rules of alerts/rules.yaml."""
    known = contract_names() | recording_rule_names()
    for where, expr in all_queries():
        unknown = metric_names_in(expr) - known
        assert not unknown, f"{where}: {sorted(unknown)} not in router_lib/metric_names.py or alerts/rules.yaml"


def test_autoscaling_reads_only_metrics_the_platform_exports(documents: dict[str, list[dict]]) -> None:
    """Every KEDA ScaledObject trigger of the prod overlay queries only names of the contract."""
    known = contract_names()
    for so in [d for d in documents["prod"] if d["kind"] == "ScaledObject"]:
        for trigger in so["spec"]["triggers"]:
            unknown = metric_names_in(trigger["metadata"]["query"]) - known
            assert not unknown, f"ScaledObject {so['metadata']['name']}: {sorted(unknown)}"


@pytest.mark.integration
def test_png_renderer_draws_every_panel_from_prometheus(tmp_path: Path) -> None:
    """Against a real Prometheus scraping the fake exporter, the renderer writes one non-trivial PNG
    per dashboard and no panel comes out empty ("no data")."""
    prometheus = system_tool("prometheus", "install Debian's prometheus (--no-install-recommends)")
    python = deploy_tool("python")
    port = free_port()
    with FakeExporter() as exporter:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{REPO / 'alerts' / 'rules.yaml'}]\n"
            "scrape_configs:\n"
            f"  - job_name: fake-platform\n    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n")
        proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"{base}/-/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            time.sleep(12)  # enough 1 s scrapes for rate() over 5 s windows and the recording rules
            out = tmp_path / "png"
            p = run([python, "-m", "dashboards.render_png", "--prometheus", base, "--out", out,
                     "--range-s", "10", "--step-s", "1", "--rate-interval", "5s",
                     "--note", "SYNTHETIC data (tests/deploy/fake_exporter.py), not measurements"], timeout_s=120)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert p.returncode == 0, p.stderr
    pngs = sorted(out.glob("*.png"))
    assert [x.stem for x in pngs] == sorted(DASHBOARDS)
    assert all(x.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and x.stat().st_size > 20_000 for x in pngs)
    assert "no data" not in p.stdout, p.stdout
