"""Candidate replicas of a release on this machine: real ``tritonserver`` processes serving the
candidate version of a model, beside the fleet's stable replicas (separate replicas per version,
see docs/releases.md).

The repository of a candidate replica holds the model under the candidate's version directory
(``<model>/<N>/``), so Triton answers ``model_version: N`` and counts its metrics under
``version="N"``; the clients' requests stay unchanged (no version in them).  Its accelerated
step is served by ``releases/backend/model.py`` (the same ONNX file through Triton's Python
backend) so that a fault can be injected while it serves (``inject``): latency, or outputs that
disagree with the stable version's.  In a cluster the candidate is a second Deployment with the
new image or model path; the control plane only needs its endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import requests

from fleet.triton_process import GrpcTls, TritonProcess, prepare_backend_dir
from model_repository.definitions import ModelDefinition
from model_repository.triton_config import Target, accelerated_config, to_pbtxt, write_model
from router_lib.release import CandidateEndpoint

BACKEND_MODEL = Path(__file__).resolve().parent / "backend" / "model.py"


def write_candidate_repository(repo: Path, model: ModelDefinition, version: str, artifacts: Path,
                               fault_file: Path) -> Path:
    """``repo`` holding ``model`` at ``version`` with its accelerated step on the fault-injecting
    Python model (same ONNX file, same inputs and outputs, same batching)."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    target = Target("cpu", instances=1)
    write_model(repo, model, target, artifacts)
    cfg = accelerated_config(model, target)
    cfg.backend = "python"
    cfg.ClearField("default_model_filename")
    cfg.parameters["fault_file"].string_value = str(fault_file.resolve())
    step_dir = repo / cfg.name
    (step_dir / "config.pbtxt").write_text(to_pbtxt(cfg))
    link = step_dir / "1" / "model.py"
    link.unlink(missing_ok=True)
    os.symlink(BACKEND_MODEL, link)
    top = repo / model.name
    (top / "1").rename(top / version)
    return repo


_JSON_TYPES = {"TYPE_FP32": ("FP32", 0.0), "TYPE_FP16": ("FP16", 0.0), "TYPE_INT64": ("INT64", 0),
               "TYPE_INT32": ("INT32", 0), "TYPE_STRING": ("BYTES", "warm up")}


def warm_up(http_url: str, model: ModelDefinition, requests_n: int = 20) -> None:
    """Send a few requests of the right shape before the candidate takes traffic: a cold replica's
    first answers (session start, first allocations) are slower, and would read as a regression."""
    inputs = []
    for t in model.inputs:
        datatype, value = _JSON_TYPES.get(t.data_type, ("FP32", 0.0))
        shape = [1, *(d if d > 0 else 8 for d in t.dims)]
        count = 1
        for d in shape:
            count *= d
        inputs.append({"name": t.name, "shape": shape, "datatype": datatype, "data": [value] * count})
    session = requests.Session()
    for _ in range(requests_n):
        session.post(f"http://{http_url}/v2/models/{model.name}/infer", json={"inputs": inputs}, timeout=30)


@dataclass
class CandidateReplicas:
    """``replicas`` Triton processes serving ``model`` at ``version`` for ``pool``."""

    model: ModelDefinition
    version: str
    pool: str
    workdir: Path
    artifacts: Path
    replicas: int = 1
    grpc_tls: GrpcTls | None = None  # the pool's replicas require mTLS on gRPC: so do its candidates
    processes: list[TritonProcess] = field(default_factory=list)

    @property
    def fault_file(self) -> Path:
        return self.workdir / "fault.json"

    def start(self, timeout_s: float = 90.0) -> CandidateReplicas:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.inject()  # start healthy
        repo = write_candidate_repository(self.workdir / "repository", self.model, self.version, self.artifacts,
                                          self.fault_file)
        backends = prepare_backend_dir(self.workdir / "backends")
        try:
            for i in range(self.replicas):
                p = TritonProcess(f"{self.model.name}-v{self.version}-{self.pool}-{i}", repo, backends,
                                  self.workdir / "logs" / f"triton-{i}.log", grpc_tls=self.grpc_tls)
                self.processes.append(p)
                p.start()
            for p in self.processes:
                p.wait_ready(timeout_s)
                warm_up(p.http_url, self.model)
        except BaseException:
            self.stop()
            raise
        return self

    def endpoints(self) -> list[CandidateEndpoint]:
        return [CandidateEndpoint(self.pool, "127.0.0.1", p.ports.http, p.ports.grpc, p.metrics_url)
                for p in self.processes]

    def inject(self, *, delay_ms: float = 0.0, perturb: float = 0.0, every: int = 1) -> None:
        """Make the running candidate slow (``delay_ms`` on one execution in ``every``) or wrong
        (``perturb``); both 0: healthy.  Written atomically: a request sees the old or the new
        fault, never half."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        tmp = self.fault_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"delay_ms": delay_ms, "perturb": perturb, "every": every}))
        os.replace(tmp, self.fault_file)

    def stop(self) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            p.stop()
        self.processes = []
