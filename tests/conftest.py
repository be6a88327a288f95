"""Shared fixtures.  Integration fixtures start real processes on 127.0.0.1 with free ports and
stop them by PID; they need the models built by `make models` (the `make test` target does it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("TMAS_MODELS_DIR", ROOT / "build" / "models"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    if not (ARTIFACTS / ".built").exists():
        pytest.fail(f"models are not built in {ARTIFACTS}: run `make models` (make test does it)")
    return ARTIFACTS
