"""The command line: compare writes its results, decide-bench reports timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router_lib.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_compare_writes_json_markdown_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workload = tmp_path / "tiny.yaml"
    workload.write_text(
        "name: tiny\ndescription: two streams\nduration_s: 20\nseed: 1\nstreams:\n"
        "  - {model: text_embedding, tier: gold, rate_per_s: 50}\n"
        "  - {model: digits_classifier, tier: bronze, rate_per_s: 50, pattern: bursty}\n")
    code = main(["compare", "--workload", str(workload), "--fleet", str(ROOT / "fleet.yaml"),
                 "--out", str(tmp_path / "out"), "--no-right-size"])
    out = capsys.readouterr()
    assert code == 0
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    fleets = {f["fleet"]: f for f in result["reference"]["fleets"]}
    assert set(fleets) == {"heterogeneous", "cpu only", "gpu only", "inferentia only"}
    assert fleets["inferentia only"]["feasible"]  # digits_classifier on the inf2 instances' host CPUs
    assert fleets["inferentia only"]["planned_pools"] == {"inferentia-gold": 1, "inferentia-host-gold": 1}
    assert fleets["heterogeneous"]["tiers"]["gold"]["compliance"] is not None
    assert (tmp_path / "out" / "cost_vs_load.png").stat().st_size > 1000
    assert "| heterogeneous |" in (tmp_path / "out" / "compare.md").read_text()
    assert "[1/4]" in out.err  # progress goes to stderr


def test_decide_bench_prints_timings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decide-bench", "--models", "2", "--pools", "3", "--ticks", "20", "--loads", "0.5",
                 "--out", str(tmp_path)]) == 0
    assert "mean_ms=" in capsys.readouterr().out
    assert json.loads((tmp_path / "decide_bench.json").read_text())["runs"][0]["ticks"] == 20
