"""Shared pieces of the batch tests: a tiny input file, a deterministic fake model, a clock."""

from __future__ import annotations

import json
from pathlib import Path

from batch.inputs import read_rows
from batch.store import Claim, RowAnswer
from model_repository.definitions import load_models

MODELS = load_models()
EMBEDDING = MODELS["text_embedding"]


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def write_input(path: Path, n: int, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps({"id": f"r{i}", "TEXT": f"sentence number {i}"}) for i in range(n)]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def submit(store, path: Path, priority: int = 5) -> str:  # type: ignore[no-untyped-def]
    with open(path) as f:
        return store.submit(model="text_embedding", tier="bronze", priority=priority,
                            items=read_rows(f, EMBEDDING), source=str(path))


def fake_answers(claim: Claim, calls: list[int] | None = None) -> list[RowAnswer]:
    """A deterministic 'model': the embedding of a row is a function of its text."""
    out = []
    for row, r in claim.rows:
        if calls is not None:
            calls.append(row)
        text = r.inputs["TEXT"][0]
        out.append(RowAnswer(row, {"EMBEDDING": [float(len(text)), float(sum(map(ord, text)) % 997)]}, pool="cpu"))
    return out


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
