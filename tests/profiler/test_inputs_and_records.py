from __future__ import annotations

from pathlib import Path

import pytest

from model_repository.definitions import load_models
from model_repository.text_tokenizer import BucketTokenizer
from profiler.analysis import Point, ServerTimes
from profiler.inputs import request_sets, sentences_by_bucket
from profiler.run import headline_server_times

MODELS = load_models()


@pytest.mark.parametrize("batch", [4, 16, 32])
def test_a_multi_sentence_request_is_one_length_bucket(artifacts: Path, batch: int) -> None:
    model = MODELS["text_embedding"]
    assert model.tokenizer is not None
    tok = BucketTokenizer(artifacts / "tokenizer.json", model.tokenizer.pad_buckets)
    requests = sentences_by_bucket(model, artifacts, batch, 16)
    assert all(len(r) == batch for r in requests)
    for r in requests:
        widths = {tok.encode([s])[0].shape[1] for s in r}
        assert len(widths) == 1, r  # padding the request adds nothing


def test_request_sets_have_the_declared_shapes(artifacts: Path) -> None:
    [inp] = request_sets(MODELS["digits_classifier"], artifacts, 8, count=2)[0]
    assert (inp.name(), inp.shape(), inp.datatype()) == ("float_input", [8, 64], "FP32")
    [text] = request_sets(MODELS["text_embedding"], artifacts, 4, count=1)[0]
    assert (text.name(), text.shape(), text.datatype()) == ("TEXT", [4, 1], "BYTES")
    with pytest.raises(ValueError, match="outside"):
        request_sets(MODELS["digits_classifier"], artifacts, 65)


def test_an_ensembles_queue_is_the_sum_of_its_steps() -> None:
    model = MODELS["text_embedding"]
    server = {
        "text_embedding": ServerTimes(10, 0.0, 12.0, 11.0, 10, 10),  # ensembles report no queue of their own
        "text_embedding_tokenizer": ServerTimes(10, 0.5, 1.0, 0.9, 10, 10),
        "text_embedding_onnx": ServerTimes(10, 2.0, 11.0, 10.5, 5, 10),
    }
    point = Point(1, 4, 1.0, 10, 0, 1, 1, 1, 1, 1, server)
    head = headline_server_times(point, model)
    assert (head.queue_ms, head.compute_ms, head.avg_execution_batch) == (2.5, 12.0, 2.0)
