"""Job and row states, the transitions allowed between them, and progress arithmetic (pure).

A job is a file of rows.  Every row goes through the same four states, and each state is a fact
that survives a crash of whoever made it true:

    pending --claim--> sent --answer stored--> answered --appended to results--> written
       ^                 |
       +--lease expires--+   (no stored answer: sent again)
                         +--lease expires, stored answer found--> answered  (the answer is adopted,
                                                                             not asked for again)

* ``sent``: a worker holds a lease (token, expiry) on the row and has sent or will send it.
* ``answered``: the answer (or a permanent error) is durable in an answer file named by the
  lease token; the row points at it.  A row is answered at most once: only the holder of the
  current lease may mark it, so a slow worker whose lease was taken over cannot add a second answer.
* ``written``: the row's line is in the job's result file, which is appended in input order by
  one writer at a time; the committed length of that file is recorded with the rows it covers,
  so bytes appended by a writer that died before committing are cut off by the next one.

A row that failed for good (a client error, or too many lease expiries) is still ``answered``
(with its error) and ``written`` (a result line with ``error``): every input row has one line.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.CANCELLED)


class RowState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ANSWERED = "answered"
    WRITTEN = "written"


JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.COMPLETED}),  # an empty job completes
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

ROW_TRANSITIONS: Mapping[RowState, frozenset[RowState]] = {
    RowState.PENDING: frozenset({RowState.SENT, RowState.ANSWERED}),  # answered: given up without sending
    RowState.SENT: frozenset({RowState.PENDING, RowState.ANSWERED}),
    RowState.ANSWERED: frozenset({RowState.WRITTEN}),
    RowState.WRITTEN: frozenset(),
}


class TransitionError(ValueError):
    pass


def check_job_transition(current: JobState, new: JobState) -> None:
    if new not in JOB_TRANSITIONS[current]:
        raise TransitionError(f"job cannot go from {current} to {new}")


def check_row_transition(current: RowState, new: RowState) -> None:
    if new not in ROW_TRANSITIONS[current]:
        raise TransitionError(f"row cannot go from {current} to {new}")


PRIORITIES: Mapping[str, int] = {"low": 0, "normal": 5, "high": 9}


def parse_priority(text: str | int) -> int:
    """``low`` / ``normal`` / ``high`` or an integer 0-9 (higher is claimed first)."""
    if isinstance(text, int) or (isinstance(text, str) and text.strip().isdigit()):
        value = int(text)
        if not 0 <= value <= 9:
            raise ValueError(f"priority must be 0-9 or one of {', '.join(PRIORITIES)}, got {value}")
        return value
    if text not in PRIORITIES:
        raise ValueError(f"priority must be 0-9 or one of {', '.join(PRIORITIES)}, got {text!r}")
    return PRIORITIES[text]


@dataclass(frozen=True)
class PoolUsage:
    """What one pool did for a job: rows answered there, its service time, and what that cost.
    ``synthetic``: the pool answers with synthetic outputs (zeros), never evidence of correctness."""

    rows: int = 0
    pool_seconds: float = 0.0
    cost_usd: float = 0.0
    synthetic: bool = False


@dataclass(frozen=True)
class JobView:
    """A job as ``status`` shows it (read from the store; immutable)."""

    job_id: str
    model: str
    tier: str
    priority: int
    state: JobState
    rows_total: int
    rows_written: int
    rows_failed: int
    rows_answered: int  # answered, not yet written
    rows_sent: int
    created_unix_s: float
    started_unix_s: float | None
    finished_unix_s: float | None
    invalid_lines: tuple[tuple[int, str], ...] = ()
    by_pool: Mapping[str, PoolUsage] = field(default_factory=dict)
    retries: int = 0  # back-pressure releases and lease expiries

    @property
    def rows_done(self) -> int:
        return self.rows_written

    @property
    def cost_usd(self) -> float:
        return sum(u.cost_usd for u in self.by_pool.values())

    @property
    def synthetic_rows(self) -> int:
        return sum(u.rows for u in self.by_pool.values() if u.synthetic)

    def progress(self, now_unix_s: float) -> Progress:
        return progress(self.rows_total, self.rows_written, self.started_unix_s,
                        self.finished_unix_s if self.finished_unix_s is not None else now_unix_s)


@dataclass(frozen=True)
class Progress:
    fraction: float
    rows_per_s: float
    eta_s: float | None  # None: unknown (nothing written yet) or done


def progress(total: int, done: int, started_s: float | None, now_s: float) -> Progress:
    """Rows per second since the job started, and the time left at that rate."""
    fraction = 1.0 if total == 0 else done / total
    elapsed = (now_s - started_s) if started_s is not None else 0.0
    rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
    eta = None if rate <= 0 or done >= total else (total - done) / rate
    if eta is not None and not math.isfinite(eta):
        eta = None
    return Progress(fraction, rate, eta)
