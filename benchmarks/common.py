"""What every benchmark shares: the repository root, and the results writer (``reporting.results_io``,
where the profiler finds it too without importing a benchmark)."""

from __future__ import annotations

from pathlib import Path

from reporting.results_io import environment, write_results

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "environment", "write_results"]
