"""The Inferentia variant's Neuron ``model.py``, served by a real Triton over a CPU TorchScript
artifact (``torch.jit.trace`` here; ``torch_neuronx.trace`` output on inf2 -- same load/execute code)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from fleet.triton_process import TritonProcess, prepare_backend_dir
from model_repository.definitions import load_models
from model_repository.triton_config import Target, write_repository

pytestmark = pytest.mark.integration


def test_neuron_python_model_serves_the_torchscript_artifact(tmp_path, artifacts):
    repo = write_repository(tmp_path / "repo", [(load_models()["text_embedding"], Target("inferentia", instances=1))], artifacts)
    triton = TritonProcess("neuron-test", repo, prepare_backend_dir(tmp_path / "backends"), tmp_path / "triton.log")
    triton.start()
    try:
        triton.wait_ready(120)
        ref = np.load(artifacts / "text_embedding.reference.npz", allow_pickle=True)
        sentences, expected = [str(s) for s in ref["sentences"]], ref["embeddings"]
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        got = []
        for s in sentences:
            inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[s.encode()]], dtype=object))
            got.append(client.infer("text_embedding", [inp]).as_numpy("EMBEDDING")[0])
        assert float(np.abs(np.stack(got) - expected).max()) <= 1e-4
        cfg = client.get_model_config("text_embedding_onnx", as_json=True)["config"]
        assert cfg["backend"] == "python"
    finally:
        triton.stop()
    assert triton.shm_regions() == [] and triton.orphan_stub_pids() == []
