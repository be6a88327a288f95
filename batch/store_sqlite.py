"""The embedded store: SQLite for jobs and rows, the filesystem for inputs, answers and results.

Layout under ``root``::

    jobs.sqlite3                     jobs, rows (state, lease), per-pool usage
    jobs/<job>/input.jsonl           the valid rows, normalised, in input order (rows hold offsets)
    jobs/<job>/answers/<token>.jsonl one file per answered claim, written whole then renamed
    jobs/<job>/results.jsonl         one line per row, input order; valid up to jobs.written_offset

Why it is crash-safe (the states are in ``batch.jobs``): every step first makes its file durable
(write a temporary file, fsync, rename, fsync the folder) and only then commits the database
transaction that points at it.  A crash between the two leaves either an answer file no row points
at (recovery adopts it if the lease that named it expired; otherwise it is ignored and deleted at
the end) or result bytes past the committed offset (the next writer truncates them).  Writers of
the result file serialise on SQLite's write lock (``BEGIN IMMEDIATE``), so any number of worker
processes may call ``write_ready``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batch.inputs import InvalidLine, Row
from batch.jobs import JobState, JobView, PoolUsage, RowState, check_job_transition
from batch.store import Claim, FaultHook, NotReady, RowAnswer, UnknownJob, no_faults, result_line

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, model TEXT NOT NULL, tier TEXT NOT NULL, priority INTEGER NOT NULL,
    state TEXT NOT NULL, source TEXT NOT NULL, rows_total INTEGER NOT NULL, invalid_lines TEXT NOT NULL,
    created_s REAL NOT NULL, started_s REAL, finished_s REAL,
    next_write_row INTEGER NOT NULL DEFAULT 0, written_offset INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rows (
    job_id TEXT NOT NULL, row INTEGER NOT NULL, input_offset INTEGER NOT NULL, input_len INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, lease_token TEXT, lease_expires_s REAL,
    worker TEXT, answer_ref TEXT, failed INTEGER NOT NULL DEFAULT 0, error TEXT, pool TEXT,
    PRIMARY KEY (job_id, row));
CREATE INDEX IF NOT EXISTS rows_by_state ON rows (job_id, state, row);
CREATE INDEX IF NOT EXISTS rows_by_token ON rows (job_id, lease_token);
CREATE TABLE IF NOT EXISTS usage (
    job_id TEXT NOT NULL, pool TEXT NOT NULL, rows INTEGER NOT NULL, pool_seconds REAL NOT NULL,
    cost_usd REAL NOT NULL, synthetic INTEGER NOT NULL, PRIMARY KEY (job_id, pool));
"""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Whole or not at all, and durable once this returns."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class SqliteJobStore:
    """See the module docstring.  ``clock``: Unix seconds (leases outlive processes, so a wall
    clock).  ``fault``: test hook called at the crash points of ``batch.store.CRASH_POINTS``."""

    def __init__(self, root: Path | str, *, clock: Callable[[], float] = time.time, max_attempts: int = 5,
                 fault: FaultHook = no_faults) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        self.db_path = self.root / "jobs.sqlite3"
        self.clock = clock
        self.max_attempts = max_attempts
        self.fault = fault
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    # -- plumbing ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Any:
        """One write transaction, taken up front (BEGIN IMMEDIATE): no upgrade deadlocks."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def _answer_path(self, job_id: str, token: str) -> Path:
        return self.job_dir(job_id) / "answers" / f"{token}.jsonl"

    # -- submit -----------------------------------------------------------------------------
    def submit(self, *, model: str, tier: str, priority: int, items: Iterable[Row | InvalidLine],
               source: str = "") -> str:
        job_id = f"job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(self.clock()))}-{uuid.uuid4().hex[:6]}"
        folder = self.job_dir(job_id)
        (folder / "answers").mkdir(parents=True)
        offsets: list[tuple[str, int, int, int]] = []
        invalid: list[tuple[int, str]] = []
        # The input copy is durable before the job exists: a crash here leaves a folder, no job.
        with open(folder / "input.jsonl", "wb") as f:
            offset = 0
            for item in items:
                if isinstance(item, InvalidLine):
                    invalid.append((item.line, item.reason))
                    continue
                data = (item.to_line() + "\n").encode()
                f.write(data)
                offsets.append((job_id, len(offsets), offset, len(data)))
                offset += len(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(folder)
        now = self.clock()
        empty = not offsets
        with self._tx() as db:
            db.execute("INSERT INTO jobs (job_id, model, tier, priority, state, source, rows_total, invalid_lines,"
                       " created_s, finished_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (job_id, model, tier, priority, JobState.COMPLETED if empty else JobState.QUEUED, source,
                        len(offsets), json.dumps(invalid), now, now if empty else None))
            db.executemany("INSERT INTO rows (job_id, row, input_offset, input_len, state) VALUES (?,?,?,?,'pending')",
                           offsets)
        if empty:
            write_file_atomically(folder / "results.jsonl", b"")
        return job_id

    # -- claim, with recovery of expired leases ---------------------------------------------
    def claim(self, *, worker: str, max_rows: int, lease_s: float, models: Sequence[str] | None = None
              ) -> Claim | None:
        now = self.clock()
        with self._tx() as db:
            jobs = db.execute("SELECT job_id, model, tier FROM jobs WHERE state IN ('queued','running')"
                              " ORDER BY priority DESC, created_s, job_id").fetchall()
            for job_id, model, tier in jobs:
                if models is not None and model not in models:
                    continue
                self._recover_expired(db, job_id, now)
                picked = db.execute("SELECT row, input_offset, input_len FROM rows WHERE job_id=? AND state='pending'"
                                    " ORDER BY row LIMIT ?", (job_id, max_rows)).fetchall()
                if not picked:
                    continue
                token = f"{worker}-{uuid.uuid4().hex[:12]}"
                expires = now + lease_s
                db.executemany("UPDATE rows SET state='sent', lease_token=?, lease_expires_s=?, worker=?,"
                               " attempts=attempts+1 WHERE job_id=? AND row=?",
                               [(token, expires, worker, job_id, r[0]) for r in picked])
                db.execute("UPDATE jobs SET state='running', started_s=COALESCE(started_s, ?) WHERE job_id=?",
                           (now, job_id))
                rows = self._read_inputs(job_id, picked)
                return Claim(job_id, token, model, tier, tuple(rows), expires)
        return None

    def next_work(self, models: Sequence[str]) -> tuple[str, str] | None:
        """(model, tier) of the job the next claim would serve, if it has rows to send."""
        marks = ",".join("?" * len(models))
        row = self._conn().execute(
            f"SELECT j.model, j.tier FROM jobs j WHERE j.state IN ('queued','running') AND j.model IN ({marks})"
            " AND EXISTS (SELECT 1 FROM rows r WHERE r.job_id=j.job_id AND r.state IN ('pending','sent'))"
            " ORDER BY j.priority DESC, j.created_s, j.job_id LIMIT 1", tuple(models)).fetchone()
        return (row[0], row[1]) if row else None

    def _read_inputs(self, job_id: str, picked: Sequence[tuple[int, int, int]]) -> list[tuple[int, Row]]:
        out = []
        with open(self.job_dir(job_id) / "input.jsonl", "rb") as f:
            for row, offset, length in picked:
                f.seek(offset)
                out.append((row, Row.from_line(f.read(length).decode())))
        return out

    def _recover_expired(self, db: sqlite3.Connection, job_id: str, now: float) -> None:
        tokens = [t for (t,) in db.execute("SELECT DISTINCT lease_token FROM rows WHERE job_id=? AND state='sent'"
                                           " AND lease_expires_s < ?", (job_id, now))]
        for token in tokens:
            path = self._answer_path(job_id, token)
            if path.exists():  # answered, then the worker died before saying so: adopt the answer
                self._mark_answered(db, job_id, token, self._read_answer_file(path))
                continue
            db.execute("UPDATE rows SET state='answered', failed=1, answer_ref=NULL, lease_token=NULL,"
                       " error=? WHERE job_id=? AND lease_token=? AND state='sent' AND attempts>=?",
                       (f"gave up after {self.max_attempts} attempts: every lease on this row expired",
                        job_id, token, self.max_attempts))
            n = db.execute("UPDATE rows SET state='pending', lease_token=NULL, lease_expires_s=NULL"
                           " WHERE job_id=? AND lease_token=? AND state='sent'", (job_id, token)).rowcount
            db.execute("UPDATE jobs SET retries=retries+? WHERE job_id=?", (n, job_id))

    @staticmethod
    def _read_answer_file(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    @staticmethod
    def _mark_answered(db: sqlite3.Connection, job_id: str, token: str, entries: Sequence[Mapping[str, Any]]) -> int:
        n = 0
        for e in entries:
            n += db.execute("UPDATE rows SET state='answered', answer_ref=?, failed=?, error=?, pool=?,"
                            " lease_expires_s=NULL WHERE job_id=? AND row=? AND lease_token=? AND state='sent'",
                            (token, int(e["error"] is not None), e["error"], e["pool"], job_id, e["row"], token)).rowcount
        return n

    # -- answer and release -----------------------------------------------------------------
    def answer(self, claim: Claim, answers: Sequence[RowAnswer], usage: Mapping[str, PoolUsage]) -> int:
        ids = dict(claim.rows)
        lines = []
        for a in answers:
            if a.row not in ids:
                raise ValueError(f"row {a.row} is not in claim {claim.token}")
            line = json.dumps(result_line(ids[a.row].row_id, a.outputs, a.error), separators=(",", ":"))
            lines.append(json.dumps({"row": a.row, "pool": a.pool, "error": a.error, "line": line},
                                    separators=(",", ":")))
        path = self._answer_path(claim.job_id, claim.token)
        write_file_atomically(path, ("\n".join(lines) + "\n").encode())  # "answered" is durable from here
        self.fault("after_answer_file")
        with self._tx() as db:
            for pool, u in usage.items():  # the pool's time was spent whether or not the lease still holds
                db.execute("INSERT INTO usage (job_id, pool, rows, pool_seconds, cost_usd, synthetic)"
                           " VALUES (?,?,?,?,?,?) ON CONFLICT (job_id, pool) DO UPDATE SET rows=rows+excluded.rows,"
                           " pool_seconds=pool_seconds+excluded.pool_seconds, cost_usd=cost_usd+excluded.cost_usd,"
                           " synthetic=excluded.synthetic",
                           (claim.job_id, pool, u.rows, u.pool_seconds, u.cost_usd, int(u.synthetic)))
            state = db.execute("SELECT state FROM jobs WHERE job_id=?", (claim.job_id,)).fetchone()
            if state is None or state[0] == JobState.CANCELLED:
                return 0
            return self._mark_answered(db, claim.job_id, claim.token,
                                       [{"row": a.row, "error": a.error, "pool": a.pool} for a in answers])

    def release(self, claim: Claim, *, back_pressure: bool = True) -> int:
        with self._tx() as db:
            n = db.execute(f"UPDATE rows SET state='pending', lease_token=NULL, lease_expires_s=NULL"
                           f"{', attempts=attempts-1' if back_pressure else ''}"
                           " WHERE job_id=? AND lease_token=? AND state='sent'", (claim.job_id, claim.token)).rowcount
            db.execute("UPDATE jobs SET retries=retries+? WHERE job_id=?", (n, claim.job_id))
            return int(n)

    # -- write the result file in input order -----------------------------------------------
    def write_ready(self, job_id: str, max_rows: int = 5000) -> int:
        with self._tx() as db:
            job = db.execute("SELECT state, next_write_row, written_offset, rows_total FROM jobs WHERE job_id=?",
                             (job_id,)).fetchone()
            if job is None:
                raise UnknownJob(job_id)
            state, next_row, offset, total = job
            if state != JobState.RUNNING:
                return 0
            ready = db.execute("SELECT row, state, answer_ref, error, input_offset, input_len FROM rows"
                               " WHERE job_id=? AND row>=? ORDER BY row LIMIT ?", (job_id, next_row, max_rows)).fetchall()
            run: list[tuple[Any, ...]] = []
            for r in ready:
                if r[1] != RowState.ANSWERED or r[0] != next_row + len(run):
                    break
                run.append(r)
            if not run:
                return 0
            data = self._result_bytes(job_id, run)
            path = self.job_dir(job_id) / "results.jsonl"
            with open(path, "ab") as f:
                f.truncate(offset)  # bytes past the committed offset are a dead writer's: cut them off
                f.seek(offset)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.fault("after_results_append")
            last = run[-1][0]
            db.execute("UPDATE rows SET state='written' WHERE job_id=? AND row BETWEEN ? AND ?", (job_id, next_row, last))
            done = last + 1 >= total
            db.execute("UPDATE jobs SET next_write_row=?, written_offset=?, state=?, finished_s=? WHERE job_id=?",
                       (last + 1, offset + len(data), JobState.COMPLETED if done else JobState.RUNNING,
                        self.clock() if done else None, job_id))
        if done:
            shutil.rmtree(self.job_dir(job_id) / "answers", ignore_errors=True)
        return len(run)

    def _result_bytes(self, job_id: str, run: Sequence[tuple[Any, ...]]) -> bytes:
        cache: dict[str, dict[int, str]] = {}
        out = []
        input_path = self.job_dir(job_id) / "input.jsonl"
        with open(input_path, "rb") as inputs:
            for row, _, ref, error, in_offset, in_len in run:
                if ref is None:  # given up without an answer: the line says why
                    inputs.seek(in_offset)
                    row_id = Row.from_line(inputs.read(in_len).decode()).row_id
                    out.append(json.dumps(result_line(row_id, None, error), separators=(",", ":")))
                    continue
                if ref not in cache:
                    cache[ref] = {e["row"]: e["line"] for e in self._read_answer_file(self._answer_path(job_id, ref))}
                out.append(cache[ref][row])
        return ("\n".join(out) + "\n").encode()

    # -- operator actions and views -----------------------------------------------------------
    def cancel(self, job_id: str) -> JobView:
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(job_id)
            current = JobState(row[0])
            if not current.terminal:
                check_job_transition(current, JobState.CANCELLED)
                db.execute("UPDATE jobs SET state='cancelled', finished_s=? WHERE job_id=?", (self.clock(), job_id))
        return self.job(job_id)

    def job(self, job_id: str) -> JobView:
        db = self._conn()
        row = db.execute("SELECT job_id, model, tier, priority, state, rows_total, created_s, started_s, finished_s,"
                         " invalid_lines, retries FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        counts: dict[str, int] = dict(db.execute("SELECT state, COUNT(*) FROM rows WHERE job_id=? GROUP BY state",
                                                 (job_id,)).fetchall())
        failed = db.execute("SELECT COUNT(*) FROM rows WHERE job_id=? AND failed=1 AND state='written'",
                            (job_id,)).fetchone()[0]
        usage = {pool: PoolUsage(rows, seconds, cost, bool(synthetic)) for pool, rows, seconds, cost, synthetic in
                 db.execute("SELECT pool, rows, pool_seconds, cost_usd, synthetic FROM usage WHERE job_id=?"
                            " ORDER BY pool", (job_id,))}
        return JobView(
            job_id=row[0], model=row[1], tier=row[2], priority=row[3], state=JobState(row[4]), rows_total=row[5],
            rows_written=counts.get(RowState.WRITTEN, 0), rows_failed=failed,
            rows_answered=counts.get(RowState.ANSWERED, 0), rows_sent=counts.get(RowState.SENT, 0),
            created_unix_s=row[6], started_unix_s=row[7], finished_unix_s=row[8],
            invalid_lines=tuple((int(n), str(r)) for n, r in json.loads(row[9])), by_pool=usage, retries=row[10])

    def jobs(self) -> list[JobView]:
        ids = [j for (j,) in self._conn().execute("SELECT job_id FROM jobs ORDER BY created_s, job_id")]
        return [self.job(j) for j in ids]

    def queue_depth(self) -> dict[str, int]:
        """Rows not yet answered, per unfinished job (what KEDA would scale workers on)."""
        return dict(self._conn().execute(
            "SELECT r.job_id, COUNT(*) FROM rows r JOIN jobs j ON j.job_id=r.job_id"
            " WHERE j.state IN ('queued','running') AND r.state IN ('pending','sent') GROUP BY r.job_id").fetchall())

    def row_pools(self, job_id: str) -> dict[int, str | None]:
        return dict(self._conn().execute("SELECT row, pool FROM rows WHERE job_id=?", (job_id,)).fetchall())

    def export_results(self, job_id: str, out: Path, *, partial: bool = False) -> int:
        """Copy the committed result lines to ``out`` (atomically).  -> lines copied."""
        view = self.job(job_id)
        if view.state is not JobState.COMPLETED and not partial:
            raise NotReady(f"job {job_id} is {view.state} ({view.rows_written} of {view.rows_total} rows written);"
                           " wait for it, or ask for the partial results")
        offset = self._conn().execute("SELECT written_offset FROM jobs WHERE job_id=?", (job_id,)).fetchone()[0]
        path = self.job_dir(job_id) / "results.jsonl"
        out = Path(out)
        tmp = out.with_name(f".{out.name}.tmp")
        with open(path, "rb") if path.exists() else open(os.devnull, "rb") as src, open(tmp, "wb") as dst:
            remaining = offset
            while remaining > 0:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
        os.replace(tmp, out)
        return view.rows_written
