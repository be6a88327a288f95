"""Write profile files in the format ``router_lib.config.load_profile`` reads, and read them back.

The writer builds a plain document, writes it, then loads it with the router's own loader before
it replaces anything: a profile the router would reject is never left in ``profiles/``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from router_lib.config import load_profile
from router_lib.domain import Profile


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def this_machine(stands_in_for: str) -> str:
    """An honest ``machine`` field: what ran the measurement, and what it only stands in for."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{platform.node() or 'local'}: {cpu}, {os.cpu_count()} cores, {platform.machine()}, shared with other "
            f"work; NOT a {stands_in_for} -- that instance type is used only for its price")


def profile_document(*, model: str, accelerator: str, instance_type: str, instances_per_replica: int,
                     max_batch_size: int, latency_ms_by_batch: Mapping[int, float], p99_over_p50: float,
                     machine: str, triton_version: str, model_version: str, artifact_sha256: str,
                     source: str, date: str | None = None) -> dict[str, Any]:
    return {
        "model": model,
        "accelerator": accelerator,
        "instance_type": instance_type,
        "instances_per_replica": instances_per_replica,
        "max_batch_size": max_batch_size,
        "latency_ms_by_batch": {int(b): float(v) for b, v in sorted(latency_ms_by_batch.items())},
        "p99_over_p50": float(p99_over_p50),
        "provenance": {
            "kind": "measured",
            "date": date or time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": machine,
            "triton_version": triton_version,
            "model_version": model_version,
            "artifact_sha256": artifact_sha256,
            "source": source,
        },
    }


HEADER = ("# Measured by the profiler (python -m profiler); do not edit by hand -- rerun it.\n"
          "# latency_ms_by_batch: client-observed p50 ms of one request of that batch at concurrency 1.\n")


def write_profile(path: Path, document: Mapping[str, Any]) -> Profile:
    """Write atomically after validating with the router's loader; -> the loaded Profile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + yaml.safe_dump(dict(document), sort_keys=False, width=100)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        profile = load_profile(tmp)  # raises ConfigError naming the field if we wrote nonsense
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return profile
