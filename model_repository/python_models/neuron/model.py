"""Triton Python model for AWS Inferentia (inf2): serves a TorchScript module traced by
``torch_neuronx.trace``.  On inf2, importing ``torch_neuronx`` registers the Neuron ops the traced
graph calls; on a machine without Neuron, a CPU ``torch.jit.trace`` artifact of the same module
exercises this exact load/execute code (that is what the tests do).
"""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

try:  # present only in the Neuron image
    import torch_neuronx  # noqa: F401
    NEURON = True
except ImportError:
    NEURON = False


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.module = torch.jit.load(os.path.join(version_dir, params.get("artifact", "model.pt")))
        self.module.eval()
        torch.set_num_threads(int(params.get("torch_threads", "1")))
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        with torch.inference_mode():
            for r in requests:
                inputs = [torch.from_numpy(pb_utils.get_input_tensor_by_name(r, n).as_numpy()) for n in self.input_names]
                outputs = self.module(*inputs)
                if isinstance(outputs, torch.Tensor):
                    outputs = (outputs,)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(n, np.ascontiguousarray(o.numpy())) for n, o in zip(self.output_names, outputs, strict=True)
                ]))
        return responses
