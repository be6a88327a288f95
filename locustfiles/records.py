"""One line per request, written by the locust users and read by the report.

Locust's own stats give percentiles per request name, but SLA compliance (the share of requests
within the tier's bound) and "which pool served it, over time" need every request.  Each record is
a JSON object on its own line; the file is opened in append mode and each line is written in one
``write`` call so that users in one gevent process never interleave.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from locustfiles.settings import RECORDS_ENV  # noqa: F401 - re-exported for readers of this module


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it.

    ``t_unix_s``: when it was sent (wall clock); ``latency_ms``: send to full response;
    ``pool``: the ``x-served-by`` response header ("" when the response carried none, e.g. an
    error Envoy answered itself); ``emulated``: the ``x-emulated`` header.
    """

    t_unix_s: float
    tier: str
    model: str
    protocol: str
    pool: str
    emulated: bool
    latency_ms: float
    ok: bool
    batch: int = 1
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_mapping(raw: dict[str, Any]) -> RequestRecord:
        return RequestRecord(
            t_unix_s=float(raw["t_unix_s"]), tier=str(raw["tier"]), model=str(raw["model"]),
            protocol=str(raw.get("protocol", "")), pool=str(raw.get("pool", "")),
            emulated=bool(raw.get("emulated", False)), latency_ms=float(raw["latency_ms"]), ok=bool(raw["ok"]),
            batch=int(raw.get("batch", 1)), error=str(raw.get("error", "")),
        )


class RecordWriter:
    """Appends records to a JSONL file; ``None`` path: records are dropped (plain locust runs)."""

    def __init__(self, path: Path | str | None) -> None:
        self._file: IO[str] | None = open(path, "a", buffering=1 << 16) if path else None  # noqa: SIM115

    def write(self, record: RequestRecord) -> None:
        if self._file is not None:
            self._file.write(record.to_json() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_records(path: Path | str) -> list[RequestRecord]:
    """Every record in ``path``; a truncated last line (a killed run) is skipped."""
    return list(iter_records(Path(path).read_text().splitlines()))


def iter_records(lines: Iterable[str]) -> Iterator[RequestRecord]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            yield RequestRecord.from_mapping(json.loads(line))
        except (ValueError, KeyError):
            continue
