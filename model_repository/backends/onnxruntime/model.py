"""A Python-based Triton backend named ``onnxruntime``.

The pytriton wheel's Triton ships only the Python backend, so on this machine a config that says
``backend: "onnxruntime"`` is served by this file (``<backend-dir>/onnxruntime/model.py``).  The same
config.pbtxt is served by the official C++ ONNX Runtime backend in the production CPU image.
It honours the C++ backend's ``intra_op_thread_count`` parameter.
"""

import json
import os
import runpy

_boot = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "_bootstrap.py"))
_boot["add_project_root"](__file__)

import triton_python_backend_utils as pb_utils  # noqa: E402

from model_repository.ort_runner import make_session, run_batched  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        filename = config.get("default_model_filename") or "model.onnx"
        self.session = make_session(os.path.join(version_dir, filename), int(params.get("intra_op_thread_count", "1")))
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names}
            for r in requests
        ]
        results = run_batched(self.session, feeds, self.output_names)
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, out[n]) for n in self.output_names])
            for out in results
        ]
