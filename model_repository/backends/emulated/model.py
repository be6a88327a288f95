"""A Python-based Triton backend named ``emulated``: an accelerator emulated on this machine's CPU.

Each batch runs the real model (``outputs: real``, the default) or makes zeros of the right shape
(``outputs: synthetic``), then holds the instance until the accelerator profile's service time for
that batch size has passed, so Triton's own queueing and dynamic batching stay real.  Lag (this
CPU being slower than the profile) is exported as ``emulation_lag_ms_total``.  Every metric carries
``emulated="true"`` and the model config the parameter ``emulated: "true"``.  Triton 2.51's Python
backend cannot attach parameters to a response (``InferenceResponse(parameters=...)`` is a
TypeError there), so each response is marked where it leaves the platform: Envoy adds
``x-served-by: <pool>`` and ``x-emulated: true``.
"""

import json
import os
import runpy
import time

_boot = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "_bootstrap.py"))
_boot["add_project_root"](__file__)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from model_repository.emulation import ServiceTime, time_batch  # noqa: E402
from model_repository.ort_runner import make_session, run_batched, synthetic_outputs  # noqa: E402

_NP_TYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_FP16": np.float16,
             "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.service = ServiceTime({int(k): float(v) for k, v in json.loads(params["latency_ms_by_batch"]).items()})
        self.synthetic = params.get("outputs", "real") == "synthetic"
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.output_shapes = {
            # A reshaped output (an onboarded model's [batch] label) leaves the model in its reshape shape.
            o["name"]: (tuple(int(d) for d in (o["reshape"].get("shape", []) if "reshape" in o else o["dims"])),
                        _NP_TYPES[o["data_type"]])
            for o in config["output"]
        }
        if not self.synthetic:
            version_dir = os.path.join(args["model_repository"], args["model_version"])
            filename = config.get("default_model_filename") or "model.onnx"
            self.session = make_session(os.path.join(version_dir, filename), int(params.get("intra_op_thread_count", "1")))
        labels = {
            "model": params.get("public_model", config["name"]),
            "pool": params["pool"],
            "accelerator": params["accelerator"],
            "emulated": "true",
        }
        kind = pb_utils.MetricFamily.COUNTER
        self._families = [
            pb_utils.MetricFamily(name=n, description=d, kind=kind)
            for n, d in (
                ("emulation_executions_total", "Batches executed by an emulated pool"),
                ("emulation_profile_ms_total", "Sum of profile service times in ms"),
                ("emulation_lag_ms_total", "Sum of ms by which real compute exceeded the profile"),
                ("emulation_lagged_executions_total", "Batches whose compute exceeded the profile"),
            )
        ]
        self.m_exec, self.m_profile, self.m_lag, self.m_lagged = (f.Metric(labels=labels) for f in self._families)

    def execute(self, requests):
        start = time.perf_counter()
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names}
            for r in requests
        ]
        batch_sizes = [next(iter(f.values())).shape[0] for f in feeds]
        if self.synthetic:
            results = synthetic_outputs(batch_sizes, self.output_shapes)
        else:
            results = run_batched(self.session, feeds, self.output_names)
        timing = time_batch(self.service, sum(batch_sizes), (time.perf_counter() - start) * 1000.0)
        if timing.wait_ms > 0:
            time.sleep(timing.wait_ms / 1000.0)
        self.m_exec.increment(1)
        self.m_profile.increment(timing.target_ms)
        if timing.lag_ms > 0:
            self.m_lag.increment(timing.lag_ms)
            self.m_lagged.increment(1)
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, out[n]) for n in self.output_names])
            for out in results
        ]
