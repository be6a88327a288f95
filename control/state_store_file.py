"""State store on the local filesystem (``control.ports.StateStore``): one JSON file, written
atomically (temp file, fsync, rename) so a crash leaves the old record or the new one, never half.
A corrupt file is an error naming the file, not a silent reset to defaults."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class FileStateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Mapping[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.path}: not valid JSON ({e}); move it away to start from defaults") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a JSON object, got {type(data).__name__}")
        return data

    def save(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
