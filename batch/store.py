"""The store port: everything workers, the CLI and the HTTP API do with jobs, behind one interface.

Two implementations sit behind it: ``store_sqlite.SqliteJobStore`` (SQLite for jobs and rows, the
filesystem for inputs, answers and results: the embedded default, no setup) and
``store_aws.AwsJobStore`` (SQS for work items, S3 for inputs, answers and results).

Contract (both implementations; ``tests/batch/test_store_contract.py`` runs the same tests on each):

* ``claim`` leases up to ``max_rows`` rows of one job to the caller for ``lease_s`` seconds
  (rows ``sent``), highest priority job first, lowest row index first.  Before it does, rows whose
  lease expired are recovered: adopted as ``answered`` if their answer was stored, else ``pending``.
* ``answer`` stores the answers of a claim durably, then marks its rows ``answered``, but only rows
  the claim still holds: a slow worker whose lease was taken over adds nothing.  -> rows accepted.
* ``release`` gives a claim's rows back (``pending``) without an answer (back-pressure: the attempt
  does not count against the row).
* ``write_ready`` appends the answered rows that come next in input order to the result file and
  marks them ``written``; safe to call from any number of workers at once, and after any crash.
* ``export_results`` copies the result file (one line per input row, input order) somewhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batch.inputs import InvalidLine, Row
from batch.jobs import JobView, PoolUsage


@dataclass(frozen=True)
class Claim:
    job_id: str
    token: str  # names the lease and the answer file
    model: str
    tier: str
    rows: tuple[tuple[int, Row], ...]  # (row index in the job, the row)
    lease_expires_unix_s: float


@dataclass(frozen=True)
class RowAnswer:
    """One row's answer: ``outputs`` by output name (per-row shape), or a permanent ``error``.
    ``pool``: where it was served (Envoy's ``x-served-by``), None if it never reached one."""

    row: int
    outputs: Mapping[str, Any] | None = None
    error: str | None = None
    pool: str | None = None


class Crash(BaseException):
    """Raised by a test's fault hook to stop a store operation where a process could die.
    A BaseException, so that no ``except Exception`` on the way swallows it."""


class FaultHook(Protocol):
    def __call__(self, point: str) -> None: ...


def no_faults(point: str) -> None:
    """Production: nothing happens at the crash points."""


CRASH_POINTS = ("after_answer_file", "after_results_append")


class JobStore(Protocol):
    def submit(self, *, model: str, tier: str, priority: int, items: Iterable[Row | InvalidLine],
               source: str = "") -> str: ...

    def claim(self, *, worker: str, max_rows: int, lease_s: float, models: Sequence[str] | None = None
              ) -> Claim | None: ...

    def next_work(self, models: Sequence[str]) -> tuple[str, str] | None: ...

    def answer(self, claim: Claim, answers: Sequence[RowAnswer], usage: Mapping[str, PoolUsage]) -> int: ...

    def release(self, claim: Claim, *, back_pressure: bool = True) -> int: ...

    def write_ready(self, job_id: str) -> int: ...

    def cancel(self, job_id: str) -> JobView: ...

    def job(self, job_id: str) -> JobView: ...

    def jobs(self) -> list[JobView]: ...

    def export_results(self, job_id: str, out: Path, *, partial: bool = False) -> int: ...

    def queue_depth(self) -> dict[str, int]: ...

    def row_pools(self, job_id: str) -> dict[int, str | None]: ...


class UnknownJob(KeyError):
    def __str__(self) -> str:
        return f"no such job {self.args[0]!r}"


class NotReady(ValueError):
    """Results asked for before the job completed (without ``partial``)."""


def result_line(row_id: Any, outputs: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
    """One line of the result file: the input's id, then the outputs by name, or ``error``."""
    if error is not None:
        return {"id": row_id, "error": error}
    return {"id": row_id, **(outputs or {})}
