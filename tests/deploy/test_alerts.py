"""Prometheus rules: generated from tiers.yaml and up to date, valid, unit-tested rule by rule, and
reading only metrics the platform exports."""

from __future__ import annotations

import re

import pytest
import yaml

from alerts import generate
from dashboards.promql_names import contract_names, metric_names_in, recording_rule_names
from tests.deploy.conftest import REPO, python_for_generators, run, system_tool

RULES = REPO / "alerts" / "rules.yaml"
UNIT_TESTS = sorted((REPO / "alerts" / "tests").glob("*_test.yaml"))


def promtool() -> str:
    return system_tool("promtool", "install Debian's prometheus: apt-get install --no-install-recommends prometheus")


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_generated_files_are_up_to_date() -> None:
    p = run([python_for_generators(), "-m", "alerts.generate", "--check"])
    assert p.returncode == 0, p.stderr


def test_prometheus_rule_carries_the_same_groups() -> None:
    rule = yaml.safe_load(generate.PROMETHEUS_RULE_FILE.read_text())
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_promtool_checks_the_rules() -> None:
    p = run([promtool(), "check", "rules", RULES])
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_unit_tests_pass() -> None:
    p = run([promtool(), "test", "rules", *UNIT_TESTS], cwd=REPO / "alerts")
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_and_recording_rule_has_a_unit_test() -> None:
    tested_text = "\n".join(t.read_text() for t in UNIT_TESTS)
    alerts_tested = set(re.findall(r"alertname:\s*(\w+)", tested_text))
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] in alerts_tested, f"alert {rule['alert']} has no promtool test"
        else:
            assert rule["record"] in tested_text, f"recording rule {rule['record']} has no promtool test"


def test_rules_read_only_exported_metrics() -> None:
    known = contract_names() | recording_rule_names()
    for rule in _rules():
        unknown = metric_names_in(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


@pytest.mark.parametrize("tier", ["gold", "silver"])
def test_each_bounded_tier_pages_on_fast_and_slow_burn(tier: str) -> None:
    alerts = {(r["alert"], r["labels"].get("tier")) for r in _rules() if "alert" in r}
    for kind in ("Latency", "Error"):
        for speed in ("Fast", "Slow"):
            assert (f"SLA{kind}BudgetBurn{speed}", tier) in alerts


def test_best_effort_tier_has_no_sla_alert() -> None:
    assert all(r.get("labels", {}).get("tier") != "bronze" for r in _rules())


def test_a_tier_bound_that_is_not_a_bucket_edge_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text("default_tier: gold\nfallback_order: [cpu]\ntiers:\n  gold: {p99_ms: 42, target_compliance: 0.999}\n")
    with pytest.raises(ValueError, match="not an Envoy bucket edge"):
        generate.build_rules(tiers)
