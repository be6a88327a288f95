"""The report generator on a recorded run (a real demo run, subsampled): golden Markdown.

``UPDATE_GOLDEN=1 pytest tests/demo/test_report_golden.py`` writes the golden file (first time, or
after an intended change); review the diff.  Without that flag a missing golden file fails the test:
writing it then would compare the output with itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reporting.analysis import build_report
from reporting.page import render_markdown
from reporting.plots import write_plots
from reporting.run_data import load_run

GOLDEN = Path(__file__).parent / "golden"
PLOTS = {"latency": "latency_per_tier.png", "traffic": "traffic_split.png", "cost": "cost.png"}


def test_report_markdown_matches_golden() -> None:
    """The Markdown report of the recorded run is byte-for-byte the reviewed golden/report.md."""
    markdown = render_markdown(build_report(load_run(GOLDEN / "run")), PLOTS)
    golden = GOLDEN / "report.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(markdown)
    if not golden.exists():
        pytest.fail(f"{golden} is missing: create it with "
                    "`UPDATE_GOLDEN=1 pytest tests/demo/test_report_golden.py`, review it, and commit it")
    assert markdown == golden.read_text(), "report differs from golden/report.md (UPDATE_GOLDEN=1 rewrites it)"


def test_recorded_run_reports_a_failed_tier_with_reasons() -> None:
    report = build_report(load_run(GOLDEN / "run"))
    assert not report.verdict.passed
    assert any(line.startswith("gold:") and "late/failed by pool" in line for line in report.verdict.lines)
    assert any("LAGGED" in line for line in report.emulation_lines)
    assert {s.pool for s in report.shares} <= {"cpu", "gpu", "inf2"}


def test_plots_are_written(tmp_path: Path) -> None:
    paths = write_plots(build_report(load_run(GOLDEN / "run")), tmp_path)
    for p in paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
