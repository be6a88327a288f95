"""Triton Python model: class ids -> label strings, the last host step of an onboarded classifier's
ensemble.  A thin adapter over ``model_repository.image_steps.labels_for``; the label file (one
name per line, line k naming class k) lies beside it, named by the ``labels`` parameter."""

import json
import os
import runpy

_boot = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "backends", "_bootstrap.py"))
_boot["add_project_root"](__file__)

import triton_python_backend_utils as pb_utils  # noqa: E402

from model_repository.image_steps import labels_for  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, params["labels"]), encoding="utf-8") as f:
            self.labels = [line.strip() for line in f.read().splitlines()]
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
                    self.output_name,
                    labels_for(pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy(), self.labels))])
                for r in requests]
