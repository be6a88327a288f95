"""What the release benchmark and demo share: a one-pool local platform serving the real digits
classifier (v1), candidate replicas, a comparator, and the admin calls that drive a release."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import ROOT
from local_platform.platform import LocalPlatform, PlatformPorts, http_json
from releases.candidates import CandidateReplicas
from releases.load import TierLoad

MODEL = "digits_classifier"


def one_pool_fleet(path: Path) -> Path:
    """One real CPU pool with one replica serving ``digits_classifier`` (v1: the stable version)."""
    path.write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": str(ROOT / "profiles"),
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1,
                   "mode": "real", "models": [MODEL]}],
    }))
    return path


def start_platform(workdir: Path, artifacts: Path = ROOT / "build" / "models") -> LocalPlatform:
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalPlatform(fleet_path=one_pool_fleet(workdir / "fleet.yaml"), workdir=workdir, artifacts=artifacts,
                         ports=PlatformPorts(http=0, grpc=0), interval_s=1.0).start()


def digits_load(platform: LocalPlatform, **rates: float) -> TierLoad:
    data = np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"].astype(np.float32)

    def body(i: int) -> dict[str, Any]:
        return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32",
                            "data": data[i % len(data)].tolist()}]}
    return TierLoad(f"http://127.0.0.1:{platform.ports.http}/v2/models/{MODEL}/infer", rates, body).start()


def start_release(platform: LocalPlatform, spec: dict[str, Any], candidate: CandidateReplicas,
                  comparator: str = "") -> dict[str, Any]:
    body = json.dumps({"spec": spec, "endpoints": [e.to_json() for e in candidate.endpoints()],
                       "comparator": comparator}).encode()
    request = urllib.request.Request(f"{platform.admin_url}/releases/start", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 (our own server)
            return json.loads(r.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"release start refused ({e.code}): {e.read().decode(errors='replace')}") from None


def release(platform: LocalPlatform, name: str) -> dict[str, Any]:
    return next(r for r in http_json(f"{platform.admin_url}/releases")["releases"] if r["name"] == name)


def envoy_routes_name_version(platform: LocalPlatform, version: str) -> bool:
    """Whether any route in force in Envoy still sends weight to the ``version`` clusters."""
    url = f"http://127.0.0.1:{platform.ports.envoy_admin}/config_dump?resource=dynamic_route_configs"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310
        return f"--v{version}\"" in r.read().decode()


def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.005) -> float:
    """Poll until true; -> the time (time.time()) it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
