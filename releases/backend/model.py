"""A candidate version of an ONNX model, served by Triton's Python backend, with fault injection.

The candidate replicas of a release (``releases.candidates``) serve the model's ONNX file through
this file instead of the ``onnxruntime`` backend, so that the release demo and tests can turn a
good candidate into a slow or a wrong one while it serves, without restarting it: the model
config's ``fault_file`` parameter names a JSON file, re-read when its modification time changes:

    {"delay_ms": 120}     every request takes this much longer (a slow export)
    {"delay_ms": 120, "every": 10}
                          only one execution in 10 does (a tail regression: p95/p99 move, the
                          mean much less)
    {"perturb": 0.5}      outputs disagree with the stable version's: labels shift by one,
                          float outputs get noise of this scale (then re-normalised)

No file, or ``{}``: the candidate answers exactly like the stable version (the same ONNX file).
"""

import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub ignores PYTHONPATH (FINDINGS): find the project through this file's real location.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))

from model_repository.ort_runner import make_session, run_batched  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.session = make_session(os.path.join(version_dir, "model.onnx"), int(params.get("intra_op_thread_count", "1")))
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.fault_file = params.get("fault_file", "")
        self.fault_mtime = None
        self.fault = {}
        self.rng = np.random.default_rng(0)
        self.executions = 0

    def _read_fault(self):
        try:
            mtime = os.stat(self.fault_file).st_mtime_ns
        except OSError:
            self.fault, self.fault_mtime = {}, None
            return
        if mtime != self.fault_mtime:
            try:
                with open(self.fault_file) as f:
                    self.fault = json.load(f) or {}
            except (OSError, ValueError):
                self.fault = {}
            self.fault_mtime = mtime

    def _perturb(self, out, scale):
        changed = {}
        for name, value in out.items():
            if value.dtype.kind in "iu":
                changed[name] = (value + 1) % 10
            elif value.dtype.kind == "f":
                noisy = value + self.rng.normal(0.0, scale, value.shape).astype(value.dtype)
                norm = np.linalg.norm(noisy, axis=-1, keepdims=True)
                changed[name] = (noisy / np.maximum(norm, 1e-12)).astype(value.dtype)
            else:
                changed[name] = value
        return changed

    def execute(self, requests):
        if self.fault_file:
            self._read_fault()
        delay_ms = float(self.fault.get("delay_ms", 0) or 0)
        every = max(1, int(self.fault.get("every", 1) or 1))
        self.executions += 1
        if delay_ms > 0 and self.executions % every == 0:
            time.sleep(delay_ms / 1000.0)
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names} for r in requests]
        results = run_batched(self.session, feeds, self.output_names)
        scale = float(self.fault.get("perturb", 0) or 0)
        if scale > 0:
            results = [self._perturb(out, scale) for out in results]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, out[n]) for n in self.output_names])
                for out in results]
