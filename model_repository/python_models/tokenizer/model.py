"""Triton Python model: text -> (input_ids, attention_mask), the host step of the text_embedding
ensemble.  A thin adapter over ``model_repository.text_tokenizer``."""

import json
import os
import runpy

_boot = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "backends", "_bootstrap.py"))
_boot["add_project_root"](__file__)

import triton_python_backend_utils as pb_utils  # noqa: E402

from model_repository.text_tokenizer import BucketTokenizer, decode_text_tensor  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        buckets = [int(b) for b in params["pad_buckets"].split(",")]
        self.tokenizer = BucketTokenizer(os.path.join(version_dir, "tokenizer.json"), buckets)

    def execute(self, requests):
        responses = []
        # Requests are tokenised one by one: each keeps its own bucket, so the accelerated step can
        # batch requests of equal padded length together.
        for r in requests:
            texts = decode_text_tensor(pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy())
            ids, mask = self.tokenizer.encode(texts)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask)]))
        return responses
