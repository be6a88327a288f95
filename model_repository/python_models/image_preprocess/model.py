"""Triton Python model: uint8 [height, width, 3] photos -> the float [3, H, W] tensor an onboarded
image classifier takes; the host step of its ensemble.  A thin adapter over
``model_repository.image_steps`` (resize, centre-crop, normalise; parameters from the config)."""

import json
import os
import runpy

_boot = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "backends", "_bootstrap.py"))
_boot["add_project_root"](__file__)

import triton_python_backend_utils as pb_utils  # noqa: E402

from model_repository.image_steps import ImagePreprocess, check_image_batch, preprocess  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.spec = ImagePreprocess.from_parameters(
            {k: v["string_value"] for k, v in config.get("parameters", {}).items()})
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        # One request at a time: requests batch here only when their photos share a size, and each
        # is resized on its own anyway; the accelerated step batches the fixed-size results.
        for r in requests:
            images = pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy()
            problem = check_image_batch(images)
            if problem:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.input_name}: {problem}")))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(self.output_name, preprocess(images, self.spec))]))
        return responses
