"""The AWS store: SQS for work items, S3 for inputs, answers and results, behind the same port.

Layout in the bucket (``prefix`` first)::

    jobs/<job>/meta.json                the job: model, tier, priority, rows, chunks, state
    jobs/<job>/input.jsonl              the valid rows, normalised, in input order
    jobs/<job>/answers/<chunk>.jsonl    one object per work item, written once (If-None-Match: *)
    jobs/<job>/results.jsonl            every answer in chunk order, assembled once all exist

One SQS message per work item (a chunk of ``chunk_rows`` consecutive rows) on one of three
queues by priority (high, normal, low; workers receive from the highest first).  The states of
``batch.jobs`` map onto them:

* **sent**: the message is received and invisible for ``lease_s`` (its visibility timeout is
  the lease; its receipt handle is the claim's token).  A dead worker's message reappears.
* **answered**: the answer object exists.  S3's conditional write makes the first answer win:
  a slow worker whose message reappeared and was answered by another gets 412 and adds nothing;
  a worker that finds the answer object already there when it receives the message (its sender
  died after writing it, before deleting the message) adopts it and deletes the message without
  asking the model again.  Deleting the message is the last step, never the first.
* **written**: ``results.jsonl`` is assembled from the answer objects in chunk order once all
  exist; assembling twice writes the same bytes, so it needs no lock.

Each SQS message carries ``ApproximateReceiveCount``: a chunk received more than ``max_attempts``
times is answered with an error per row (a row that keeps killing workers must not loop forever).
Credentials and region come from boto3's usual chain (IRSA in the cluster: ``k8s/batch/``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch.inputs import InvalidLine, Row
from batch.jobs import JobState, JobView, PoolUsage
from batch.store import Claim, FaultHook, NotReady, RowAnswer, UnknownJob, no_faults, result_line

PRIORITY_QUEUES = (("high", 7), ("normal", 3), ("low", 0))  # name, lowest priority it takes


def queue_for(priority: int) -> str:
    return next(name for name, floor in PRIORITY_QUEUES if priority >= floor)


@dataclass(frozen=True)
class AwsNames:
    bucket: str
    queue_prefix: str  # queues are <prefix>-high, -normal, -low
    prefix: str = ""  # key prefix inside the bucket


class AwsJobStore:
    def __init__(self, names: AwsNames, *, s3: Any = None, sqs: Any = None, chunk_rows: int = 32,
                 max_attempts: int = 5, clock: Callable[[], float] = time.time, fault: FaultHook = no_faults,
                 endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3  # only the AWS store needs it (batch/requirements-aws.txt)

        self.names = names
        self.s3 = s3 or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.sqs = sqs or boto3.client("sqs", endpoint_url=endpoint_url, region_name=region)
        self.chunk_rows = chunk_rows
        self.max_attempts = max_attempts
        self.clock = clock
        self.fault = fault
        self._queue_urls: dict[str, str] = {}
        self._usage_cache: dict[str, dict[str, Any]] = {}
        from botocore.exceptions import ClientError
        self._client_error = ClientError

    # -- names ------------------------------------------------------------------------------
    def _key(self, job_id: str, *parts: str) -> str:
        return "/".join(p for p in (self.names.prefix.strip("/"), "jobs", job_id, *parts) if p)

    def queue_url(self, name: str) -> str:
        if name not in self._queue_urls:
            self._queue_urls[name] = self.sqs.get_queue_url(QueueName=f"{self.names.queue_prefix}-{name}")["QueueUrl"]
        return self._queue_urls[name]

    def _get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.names.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except self._client_error as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.names.bucket, Key=key)
            return True
        except self._client_error as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
                return False
            raise

    def _meta(self, job_id: str) -> dict[str, Any]:
        raw = self._get(self._key(job_id, "meta.json"))
        if raw is None:
            raise UnknownJob(job_id)
        return json.loads(raw)  # type: ignore[no-any-return]

    def _put_meta(self, meta: Mapping[str, Any]) -> None:
        self.s3.put_object(Bucket=self.names.bucket, Key=self._key(meta["job_id"], "meta.json"),
                           Body=json.dumps(meta).encode(), ContentType="application/json")

    # -- submit -----------------------------------------------------------------------------
    def submit(self, *, model: str, tier: str, priority: int, items: Iterable[Row | InvalidLine],
               source: str = "") -> str:
        job_id = f"job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(self.clock()))}-{uuid.uuid4().hex[:6]}"
        lines: list[str] = []
        invalid: list[tuple[int, str]] = []
        for item in items:
            if isinstance(item, InvalidLine):
                invalid.append((item.line, item.reason))
            else:
                lines.append(item.to_line())
        chunks = (len(lines) + self.chunk_rows - 1) // self.chunk_rows
        self.s3.put_object(Bucket=self.names.bucket, Key=self._key(job_id, "input.jsonl"),
                           Body=("\n".join(lines) + "\n").encode() if lines else b"")
        now = self.clock()
        meta = {"job_id": job_id, "model": model, "tier": tier, "priority": priority, "rows_total": len(lines),
                "chunk_rows": self.chunk_rows, "chunks": chunks, "invalid_lines": invalid, "source": source,
                "created_s": now, "started_s": None, "finished_s": now if not lines else None,
                "state": JobState.COMPLETED.value if not lines else JobState.QUEUED.value}
        if not lines:
            self.s3.put_object(Bucket=self.names.bucket, Key=self._key(job_id, "results.jsonl"), Body=b"")
        self._put_meta(meta)  # the job exists from here; work items follow (a crash here: re-submit)
        url = self.queue_url(queue_for(priority))
        for start in range(0, chunks, 10):
            self.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(c), "MessageBody": json.dumps({"job": job_id, "chunk": c, "model": model, "tier": tier})}
                for c in range(start, min(chunks, start + 10))])
        return job_id

    # -- claim ------------------------------------------------------------------------------
    def next_work(self, models: Sequence[str]) -> tuple[str, str] | None:
        for view in self._unfinished():
            if view["model"] in models:
                return view["model"], view["tier"]
        return None

    def _unfinished(self) -> list[dict[str, Any]]:
        out = [m for m in self._metas() if m["state"] in (JobState.QUEUED, JobState.RUNNING)]
        return sorted(out, key=lambda m: (-m["priority"], m["created_s"], m["job_id"]))

    def _metas(self) -> list[dict[str, Any]]:
        metas = []
        paginator = self.s3.get_paginator("list_objects_v2")
        prefix = self._key("", "").rstrip("/") + "/"
        for page in paginator.paginate(Bucket=self.names.bucket, Prefix=prefix, Delimiter="/"):
            for p in page.get("CommonPrefixes", []):
                job_id = p["Prefix"][len(prefix):].strip("/")
                raw = self._get(self._key(job_id, "meta.json"))
                if raw is not None:
                    metas.append(json.loads(raw))
        return metas

    def claim(self, *, worker: str, max_rows: int, lease_s: float, models: Sequence[str] | None = None
              ) -> Claim | None:
        for name, _ in PRIORITY_QUEUES:
            for _ in range(10):  # messages adopted, dropped or another model's: look at the next one
                got = self.sqs.receive_message(QueueUrl=self.queue_url(name), MaxNumberOfMessages=1,
                                               VisibilityTimeout=max(1, int(round(lease_s))), WaitTimeSeconds=0,
                                               MessageSystemAttributeNames=["ApproximateReceiveCount"])
                messages = got.get("Messages", [])
                if not messages:
                    break
                claim = self._claim_message(name, messages[0], worker, lease_s, models)
                if claim is not None:
                    return claim
        return None

    def _claim_message(self, queue: str, msg: Mapping[str, Any], worker: str, lease_s: float,
                       models: Sequence[str] | None) -> Claim | None:
        body = json.loads(msg["Body"])
        url = self.queue_url(queue)
        receipt = msg["ReceiptHandle"]
        job_id, chunk = body["job"], int(body["chunk"])
        try:
            meta = self._meta(job_id)
        except UnknownJob:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
            return None
        if meta["state"] == JobState.CANCELLED:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
            return None
        if models is not None and meta["model"] not in models:
            self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
            return None
        answer_key = self._key(job_id, "answers", f"{chunk:08d}.jsonl")
        if self._exists(answer_key):  # answered, then its worker died before deleting the message: adopt
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
            return None
        rows = self._rows(meta, chunk)
        token = json.dumps({"queue": queue, "receipt": receipt, "chunk": chunk, "worker": worker})
        claim = Claim(job_id, token, meta["model"], meta["tier"], tuple(rows), self.clock() + lease_s)
        if int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1")) > self.max_attempts:
            reason = f"gave up after {self.max_attempts} attempts: every lease on this row expired"
            self.answer(claim, [RowAnswer(i, error=reason) for i, _ in rows], {})
            return None
        if meta["state"] == JobState.QUEUED:
            meta.update(state=JobState.RUNNING.value, started_s=self.clock())
            self._put_meta(meta)
        return claim

    def _rows(self, meta: Mapping[str, Any], chunk: int) -> list[tuple[int, Row]]:
        # A ranged GET would need byte offsets; rows are read whole here and cut (fine for the
        # object sizes of a job's input; a very large input would store offsets beside it).
        raw = self._get(self._key(meta["job_id"], "input.jsonl")) or b""
        lines = raw.decode().splitlines()
        start = chunk * meta["chunk_rows"]
        return [(i, Row.from_line(lines[i])) for i in range(start, min(start + meta["chunk_rows"], meta["rows_total"]))]

    # -- answer and release -----------------------------------------------------------------
    def answer(self, claim: Claim, answers: Sequence[RowAnswer], usage: Mapping[str, PoolUsage]) -> int:
        token = json.loads(claim.token)
        ids = dict(claim.rows)
        entries = [json.dumps({"row": a.row, "pool": a.pool, "error": a.error,
                               "line": json.dumps(result_line(ids[a.row].row_id, a.outputs, a.error),
                                                  separators=(",", ":"))}, separators=(",", ":"))
                   for a in sorted(answers, key=lambda a: a.row)]
        header = json.dumps({"usage": {p: [u.rows, u.pool_seconds, u.cost_usd, u.synthetic] for p, u in usage.items()},
                             "rows": len(answers), "failed": sum(1 for a in answers if a.error)})
        key = self._key(claim.job_id, "answers", f"{token['chunk']:08d}.jsonl")
        meta = self._meta(claim.job_id)
        accepted = 0
        if meta["state"] != JobState.CANCELLED:
            try:
                self.s3.put_object(Bucket=self.names.bucket, Key=key, Body="\n".join([header, *entries]).encode() + b"\n",
                                   IfNoneMatch="*")
                accepted = len(answers)
            except self._client_error as e:
                if e.response["Error"]["Code"] not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise
        self.fault("after_answer_file")
        try:  # the last step: a dead worker's message reappears and finds the answer above
            self.sqs.delete_message(QueueUrl=self.queue_url(token["queue"]), ReceiptHandle=token["receipt"])
        except self._client_error:
            pass  # the receipt expired: whoever holds the message now will find the answer and adopt it
        return accepted

    def release(self, claim: Claim, *, back_pressure: bool = True) -> int:
        token = json.loads(claim.token)
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url(token["queue"]), ReceiptHandle=token["receipt"],
                                               VisibilityTimeout=0)
        except self._client_error:
            return 0
        return len(claim.rows)

    # -- results ----------------------------------------------------------------------------
    def _answer_keys(self, job_id: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.names.bucket, Prefix=self._key(job_id, "answers") + "/"):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def write_ready(self, job_id: str) -> int:
        """Assemble results.jsonl once every chunk is answered (idempotent).  -> rows written now."""
        meta = self._meta(job_id)
        if meta["state"] != JobState.RUNNING:
            return 0
        keys = self._answer_keys(job_id)
        if len(keys) < meta["chunks"]:
            return 0
        parts: list[str] = []
        for key in keys:
            lines = (self._get(key) or b"").decode().splitlines()[1:]
            parts.extend(json.loads(line)["line"] for line in lines)
        self.s3.put_object(Bucket=self.names.bucket, Key=self._key(job_id, "results.jsonl"),
                           Body=("\n".join(parts) + "\n").encode())
        self.fault("after_results_append")
        meta.update(state=JobState.COMPLETED.value, finished_s=self.clock())
        self._put_meta(meta)
        return len(parts)

    def cancel(self, job_id: str) -> JobView:
        meta = self._meta(job_id)
        if meta["state"] not in (JobState.COMPLETED, JobState.CANCELLED):
            meta.update(state=JobState.CANCELLED.value, finished_s=self.clock())
            self._put_meta(meta)
        return self.job(job_id)

    def _answer_summary(self, key: str) -> dict[str, Any]:
        if key not in self._usage_cache:  # answer objects never change: read each once
            raw = (self._get(key) or b"").decode().splitlines()
            header = json.loads(raw[0])
            header["pools"] = [json.loads(line)["pool"] for line in raw[1:]]
            self._usage_cache[key] = header
        return self._usage_cache[key]

    def job(self, job_id: str) -> JobView:
        meta = self._meta(job_id)
        answered = failed = 0
        usage: dict[str, PoolUsage] = {}
        for key in self._answer_keys(job_id):
            s = self._answer_summary(key)
            answered += s["rows"]
            failed += s["failed"]
            for pool, (rows, seconds, cost, synthetic) in s["usage"].items():
                u = usage.get(pool, PoolUsage())
                usage[pool] = PoolUsage(u.rows + rows, u.pool_seconds + seconds, u.cost_usd + cost, bool(synthetic))
        done = meta["state"] == JobState.COMPLETED
        return JobView(
            job_id=job_id, model=meta["model"], tier=meta["tier"], priority=meta["priority"],
            state=JobState(meta["state"]), rows_total=meta["rows_total"],
            rows_written=meta["rows_total"] if done else 0, rows_failed=failed,
            rows_answered=0 if done else answered, rows_sent=0, created_unix_s=meta["created_s"],
            started_unix_s=meta["started_s"], finished_unix_s=meta["finished_s"],
            invalid_lines=tuple((int(n), str(r)) for n, r in meta["invalid_lines"]), by_pool=usage)

    def jobs(self) -> list[JobView]:
        return [self.job(m["job_id"]) for m in sorted(self._metas(), key=lambda m: (m["created_s"], m["job_id"]))]

    def queue_depth(self) -> dict[str, int]:
        """Messages waiting or in flight per queue (SQS counts messages, not jobs: KEDA's signal)."""
        out = {}
        for name, _ in PRIORITY_QUEUES:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url(name),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            n = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            if n:
                out[f"queue:{name}"] = n
        return out

    def row_pools(self, job_id: str) -> dict[int, str | None]:
        out: dict[int, str | None] = {}
        for key in self._answer_keys(job_id):
            for line in (self._get(key) or b"").decode().splitlines()[1:]:
                e = json.loads(line)
                out[e["row"]] = e["pool"]
        return out

    def export_results(self, job_id: str, out: Path, *, partial: bool = False) -> int:
        view = self.job(job_id)
        if view.state is not JobState.COMPLETED:
            if not partial:
                raise NotReady(f"job {job_id} is {view.state} ({view.rows_answered} of {view.rows_total} rows answered);"
                               " wait for it, or ask for the partial results")
            Path(out).write_bytes(b"")
            return 0
        data = self._get(self._key(job_id, "results.jsonl")) or b""
        Path(out).write_bytes(data)
        return view.rows_written
