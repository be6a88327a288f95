"""Parsing Triton's statistics extension: the shape tritonserver 2.51 answers, and bad input named."""

from __future__ import annotations

from typing import Any

import pytest

from router_lib.calibration_stats import BatchCounters, ModelStats, StatsParseError, parse_model_stats

# Trimmed from a real answer of tritonserver 2.51 (nvidia-pytriton 0.7.0), digits_classifier.
REAL = {"model_stats": [{
    "name": "digits_classifier", "version": "1", "last_inference": 1795969234568, "inference_count": 25,
    "execution_count": 10,
    "inference_stats": {"success": {"count": 10, "ns": 49327784}, "fail": {"count": 0, "ns": 0},
                        "queue": {"count": 10, "ns": 320810}, "compute_input": {"count": 10, "ns": 281399},
                        "compute_infer": {"count": 10, "ns": 48342164}, "compute_output": {"count": 10, "ns": 368620}},
    "response_stats": {},
    "batch_stats": [
        {"batch_size": 1, "compute_input": {"count": 5, "ns": 222782}, "compute_infer": {"count": 5, "ns": 47212581},
         "compute_output": {"count": 5, "ns": 248179}},
        {"batch_size": 4, "compute_input": {"count": 5, "ns": 58617}, "compute_infer": {"count": 5, "ns": 1129583},
         "compute_output": {"count": 5, "ns": 120441}}],
    "memory_usage": []}]}


def test_a_real_answer_parses_to_executions_and_service_ns_per_batch_size() -> None:
    stats = parse_model_stats(REAL, "r")["digits_classifier"]
    assert stats.by_batch == {1: BatchCounters(5, 222782 + 47212581 + 248179),
                              4: BatchCounters(5, 58617 + 1129583 + 120441)}
    assert (stats.requests, stats.request_ns) == (10, 49327784)


def test_an_ensemble_without_batch_stats_parses_empty_and_versions_add_up() -> None:
    doc = {"model_stats": [{"name": "e", "version": "1", "inference_stats": {"success": {"count": 3, "ns": 9}}},
                           {"name": "m", "version": "1", "batch_stats": [
                               {"batch_size": 1, "compute_infer": {"count": 2, "ns": 10}}]},
                           {"name": "m", "version": "2", "batch_stats": [
                               {"batch_size": 1, "compute_infer": {"count": "3", "ns": "5"}}]}]}
    out = parse_model_stats(doc, "r")
    assert out["e"] == ModelStats("e", {}, 3, 9)
    assert out["m"].by_batch == {1: BatchCounters(5, 15)}


def test_counters_that_went_back_mean_a_restart() -> None:
    before = ModelStats("m", {1: BatchCounters(10, 100)}, 10, 100)
    assert ModelStats("m", {1: BatchCounters(2, 20)}, 2, 20).went_back_from(before)
    assert ModelStats("m", {}, 0, 0).went_back_from(before)
    assert not ModelStats("m", {1: BatchCounters(11, 110), 2: BatchCounters(1, 5)}, 13, 115).went_back_from(before)


def _with(**entry: Any) -> dict[str, Any]:
    return {"model_stats": [{"name": "m", **entry}]}


@pytest.mark.parametrize(("doc", "message"), [
    ([], "expected a JSON object, got list"),
    ({}, "model_stats: expected a list"),
    ({"model_stats": [3]}, r"model_stats\[0\]: expected an object"),
    ({"model_stats": [{"name": ""}]}, r"model_stats\[0\]\.name"),
    (_with(batch_stats={}), r"model_stats\[0\]\.batch_stats: expected a list"),
    (_with(batch_stats=[{"batch_size": 0, "compute_infer": {"count": 1, "ns": 1}}]),
     r"batch_stats\[0\]\.batch_size: expected an integer >= 1, got 0"),
    (_with(batch_stats=[{"batch_size": 1, "compute_infer": {"count": -1, "ns": 1}}]),
     r"batch_stats\[0\]\.compute_infer\.count: expected an integer >= 0, got -1"),
    (_with(batch_stats=[{"batch_size": 1}]), r"batch_stats\[0\]\.compute_infer: expected an object"),
    (_with(batch_stats=[{"batch_size": 1, "compute_infer": {"count": 1, "ns": 1.5}}]), r"compute_infer\.ns"),
    (_with(batch_stats=[{"batch_size": 2, "compute_infer": {}}, {"batch_size": 2, "compute_infer": {}}]),
     r"batch_stats\[1\]\.batch_size: 2 listed twice"),
    (_with(inference_stats={"success": {"count": True}}), r"inference_stats\.success\.count"),
], ids=["not-object", "no-list", "entry-not-object", "no-name", "batch-stats-not-list", "batch-size-0",
        "negative-count", "missing-compute-infer", "float-ns", "duplicate-batch", "bool-count"])
def test_bad_statistics_are_named_precisely(doc: Any, message: str) -> None:
    with pytest.raises(StatsParseError, match=message) as e:
        parse_model_stats(doc, "http://h:1/v2/models/m/stats")
    assert "http://h:1/v2/models/m/stats" in str(e.value)
