"""The jobs HTTP API (served by ``python -m batch serve`` and, with ``--api-port``, by a worker).

    POST /jobs?model=M[&tier=bronze][&priority=normal][&strict=1]   body: the JSONL input file
                                     -> 201 {"job": ID, "rows": N, "invalid_lines": [...]}
    GET  /jobs                       -> every job's status
    GET  /jobs/ID                    -> one job's status (the CLI's ``status --json``)
    POST /jobs/ID/cancel             -> the job's status after cancelling
    GET  /jobs/ID/results[?partial=1] -> the result file (JSONL, input order); 409 until complete
    GET  /metrics                    -> Prometheus text (job rows, rows/s, queue depth, cost)
    GET  /healthz

Bad requests get 4xx with ``{"error": ...}`` naming what is wrong.  Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from batch.inputs import StrictInputError
from batch.service import status_dict, submit
from batch.store import JobStore, NotReady, UnknownJob
from control.json_http import HttpService, JsonHandler
from model_repository.definitions import ModelDefinition

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 512 << 20


def _handler(store: JobStore, models: Mapping[str, ModelDefinition], registry: CollectorRegistry
             ) -> type[JsonHandler]:
    class Handler(JsonHandler):
        log_name = "batch api"

        def _parts(self) -> tuple[list[str], dict[str, str]]:
            url = urlparse(self.path)
            return [p for p in url.path.split("/") if p], {k: v[-1] for k, v in parse_qs(url.query).items()}

        def do_GET(self) -> None:  # noqa: N802
            parts, query = self._parts()
            try:
                if parts == ["healthz"]:
                    self.send_json(200, {"ok": True})
                elif parts == ["metrics"]:
                    self.send_body(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif parts == ["jobs"]:
                    self.send_json(200, [status_dict(j, time.time()) for j in store.jobs()])
                elif len(parts) == 2 and parts[0] == "jobs":
                    self.send_json(200, status_dict(store.job(parts[1]), time.time()))
                elif len(parts) == 3 and parts[0] == "jobs" and parts[2] == "results":
                    with tempfile.TemporaryDirectory() as tmp:
                        out = Path(tmp) / "results.jsonl"
                        store.export_results(parts[1], out, partial=query.get("partial") in ("1", "true"))
                        self.send_body(200, out.read_bytes(), "application/jsonl")
                else:
                    self.send_json(404, {"error": f"no such path {self.path!r}; try /jobs, /jobs/ID, /jobs/ID/results"})
            except UnknownJob as e:
                self.send_json(404, {"error": str(e)})
            except NotReady as e:
                self.send_json(409, {"error": str(e)})

        def do_POST(self) -> None:  # noqa: N802
            parts, query = self._parts()
            try:
                if parts == ["jobs"]:
                    self._submit(query)
                elif len(parts) == 3 and parts[0] == "jobs" and parts[2] == "cancel":
                    self.send_json(200, status_dict(store.cancel(parts[1]), time.time()))
                else:
                    self.send_json(404, {"error": f"no such path {self.path!r}; try POST /jobs or /jobs/ID/cancel"})
            except UnknownJob as e:
                self.send_json(404, {"error": str(e)})

        def _submit(self, query: dict[str, str]) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_json(413, {"error": f"input larger than {MAX_BODY_BYTES} bytes"})
                return
            if "model" not in query:
                self.send_json(400, {"error": "missing query parameter 'model'"})
                return
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            try:
                job = submit(store, models, model=query["model"], lines=io.StringIO(body),
                             tier=query.get("tier", "bronze"), priority=query.get("priority", "normal"),
                             strict=query.get("strict") in ("1", "true"), source="http")
            except StrictInputError as e:
                self.send_json(400, {"error": str(e), "invalid_lines": [{"line": p.line, "reason": p.reason}
                                                                    for p in e.problems]})
                return
            except ValueError as e:
                self.send_json(400, {"error": str(e)})
                return
            view = store.job(job)
            self.send_json(201, {"job": job, "rows": view.rows_total,
                             "invalid_lines": [{"line": n, "reason": r} for n, r in view.invalid_lines]})

    return Handler


class JobsApi(HttpService):
    def __init__(self, store: JobStore, models: Mapping[str, ModelDefinition], registry: CollectorRegistry,
                 port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(_handler(store, models, registry), port=port, host=host, thread_name="batch-api")
