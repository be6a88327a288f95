"""Run the mixed-tier locustfile headless, as a subprocess, bounded in time.

A subprocess and not locust's library API in-process: locust monkey-patches the process with
gevent, which must not happen to the process that supervises Tritons and Envoy with threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from locustfiles.settings import (
    CONNECT_FIRST_ENV,
    GRPC_TARGET_ENV,
    PACING_ENV,
    PACINGS,
    RECORDS_ENV,
    SEED_ENV,
    START_PHASE_ENV,
    START_PHASES,
    one_of,
    require_loopback,
)

LOCUSTFILE = Path(__file__).resolve().parent / "mixed_tiers.py"
ROOT = LOCUSTFILE.parents[1]


@dataclass(frozen=True)
class LocustRun:
    """What to run.  ``http_endpoint``/``grpc_endpoint``: ``127.0.0.1:port`` of Envoy."""

    http_endpoint: str
    grpc_endpoint: str
    shape: str = "steady"
    duration_s: float = 90.0
    seed: int = 1
    base_users: int = 12
    connect_first: bool = True  # users open their connections before their first request (settings.py)
    start_phase: str = "spread"  # when users added together send their first request (settings.py)
    pacing: str = "random"  # how each user spaces its requests (settings.py)

    def __post_init__(self) -> None:
        one_of(self.start_phase, START_PHASES, "start_phase ")
        one_of(self.pacing, PACINGS, "pacing ")
        for endpoint in (self.http_endpoint, self.grpc_endpoint):
            require_loopback(endpoint.rsplit(":", 1)[0], "the endpoint")

    def command(self, csv_prefix: Path) -> list[str]:
        return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
                "--csv", str(csv_prefix), "-H", f"http://{self.http_endpoint}",
                # The shape ends the run; --run-time is the hard stop if it somehow does not.
                "--run-time", f"{int(self.duration_s) + 10}s", "--stop-timeout", "5",
                "--exit-code-on-error", "0", "--loglevel", "WARNING"]

    def env(self, records_path: Path) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(ROOT), LOAD_SHAPE=self.shape, LOAD_DURATION_S=str(self.duration_s),
                    LOAD_BASE_USERS=str(self.base_users), **{SEED_ENV: str(self.seed), GRPC_TARGET_ENV: self.grpc_endpoint,
                                                           RECORDS_ENV: str(records_path),
                                                           CONNECT_FIRST_ENV: "1" if self.connect_first else "0",
                                                           START_PHASE_ENV: self.start_phase,
                                                           PACING_ENV: self.pacing})


def run_locust(run: LocustRun, out: Path, records_path: Path) -> subprocess.CompletedProcess[str]:
    """Run to completion (bounded by ``duration_s`` + 90 s); locust's summary goes to ``locust.log``."""
    out.mkdir(parents=True, exist_ok=True)
    records_path.unlink(missing_ok=True)
    with open(out / "locust.log", "w") as log:
        proc = subprocess.run(run.command(out / "locust"), env=run.env(records_path), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, text=True, timeout=run.duration_s + 90, check=False)
    return proc
