"""Reading a job's input file: one JSON object per line, an ``id`` and the model's inputs by name.

Validated once, here, against the model's declared inputs (``model_repository/models.yaml``), so
that a worker never sends a row the model would reject: a malformed line is reported with its line
number and reason and left out of the job (or, in strict mode, refuses the whole file).  What a
valid row becomes is a :class:`Row`: the id as given (a string or an integer, unique in the file)
and each input as a flat list the KServe v2 request carries unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from model_repository.definitions import ModelDefinition, TensorSpec

NUMERIC_TYPES = {"TYPE_FP32": float, "TYPE_FP16": float, "TYPE_INT64": int, "TYPE_INT32": int, "TYPE_UINT8": int}
KSERVE_DATATYPES = {"TYPE_STRING": "BYTES", "TYPE_FP32": "FP32", "TYPE_FP16": "FP16", "TYPE_INT64": "INT64",
                    "TYPE_INT32": "INT32", "TYPE_UINT8": "UINT8", "TYPE_BOOL": "BOOL"}
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class Row:
    """One valid input row.  ``inputs``: per model input, the row's values flattened (one string for
    a TYPE_STRING [1] input)."""

    row_id: str | int
    inputs: dict[str, list[Any]]

    def to_line(self) -> str:
        return json.dumps({"id": self.row_id, "inputs": self.inputs}, separators=(",", ":"))

    @staticmethod
    def from_line(line: str) -> Row:
        data = json.loads(line)
        return Row(data["id"], data["inputs"])


@dataclass(frozen=True)
class InvalidLine:
    line: int  # 1-based
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class StrictInputError(ValueError):
    """Strict mode: the file has malformed lines; nothing was submitted."""

    def __init__(self, problems: list[InvalidLine]) -> None:
        shown = "; ".join(str(p) for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{len(problems)} malformed line(s), strict mode: {shown}{more}")
        self.problems = problems


def _element_count(spec: TensorSpec) -> int:
    n = 1
    for d in spec.dims:
        if d < 0:
            raise ValueError(f"input {spec.name} has a variable dimension; batch jobs need fixed shapes")
        n *= d
    return n


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            out.extend(_flatten(v))
        return out
    return [value]


def _check_value(spec: TensorSpec, value: Any) -> list[Any]:
    """The row's values for ``spec``, flattened, or ValueError naming what is wrong."""
    count = _element_count(spec)
    flat = _flatten(value)
    if len(flat) != count:
        raise ValueError(f"input {spec.name!r} needs {count} value(s) (shape {list(spec.dims)}), got {len(flat)}")
    if spec.data_type == "TYPE_STRING":
        if not all(isinstance(v, str) for v in flat):
            raise ValueError(f"input {spec.name!r} must be a string")
        return flat
    if spec.data_type == "TYPE_BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise ValueError(f"input {spec.name!r} must be true/false")
        return flat
    kind = NUMERIC_TYPES.get(spec.data_type)
    if kind is None:
        raise ValueError(f"input {spec.name!r} has type {spec.data_type}, which batch jobs do not support")
    for i, v in enumerate(flat):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"input {spec.name!r}[{i}] must be a number, got {json.dumps(v)[:40]}")
        if kind is int and not (isinstance(v, int) or float(v).is_integer()):
            raise ValueError(f"input {spec.name!r}[{i}] must be an integer, got {v}")
        if not math.isfinite(v):
            raise ValueError(f"input {spec.name!r}[{i}] must be finite")
    return [kind(v) for v in flat]


def parse_line(text: str, model: ModelDefinition) -> Row:
    """One line -> a Row, or ValueError with the reason."""
    if len(text) > MAX_LINE_BYTES:
        raise ValueError(f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if "id" not in data:
        raise ValueError("missing 'id'")
    row_id = data["id"]
    if isinstance(row_id, bool) or not isinstance(row_id, str | int) or (isinstance(row_id, str) and not row_id):
        raise ValueError("'id' must be a non-empty string or an integer")
    names = {s.name for s in model.inputs}
    unknown = sorted(set(data) - names - {"id"})
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; {model.name} takes {sorted(names)}")
    missing = sorted(names - set(data))
    if missing:
        raise ValueError(f"missing input(s) {missing} for {model.name}")
    return Row(row_id, {s.name: _check_value(s, data[s.name]) for s in model.inputs})


def read_rows(lines: Iterable[str], model: ModelDefinition) -> Iterator[Row | InvalidLine]:
    """Every non-blank line as a Row or an InvalidLine (a repeated id is invalid: results are
    matched to inputs by id)."""
    seen: set[str | int] = set()
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            row = parse_line(text, model)
        except ValueError as e:
            yield InvalidLine(number, str(e))
            continue
        key = row.row_id
        if key in seen:
            yield InvalidLine(number, f"duplicate id {json.dumps(key)}")
            continue
        seen.add(key)
        yield row
