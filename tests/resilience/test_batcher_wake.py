"""The batcher waker's pure parts: which models it wakes, the request it sends, bad input refused
naming what is wrong, and that its rejections are not counted as failed requests anywhere the
platform judges health (metric_names.NOT_FAILURES)."""

from __future__ import annotations

import json

import pytest

from fleet import batcher_wake
from fleet.batcher_wake import BatcherWaker, wake_body, wake_level, wake_targets
from model_repository.triton_config import WAKE_LEVEL_PARAMETER
from router_lib.metric_names import counts_as_failure
from router_lib.metrics_text import parse_triton
from router_lib.release_observe import parse_triton_model


def _config(name: str = "m", *, level: str | None = "4", levels: int = 4, batched: bool = True,
            inputs: list[dict] | None = None) -> dict:
    cfg: dict = {"name": name, "max_batch_size": 8 if batched else 0,
                 "input": inputs if inputs is not None else [
                     {"name": "ids", "data_type": "TYPE_INT64", "dims": ["-1"]},
                     {"name": "text", "data_type": "TYPE_STRING", "dims": ["1"]},
                     {"name": "flag", "data_type": "TYPE_BOOL", "dims": ["2", "3"]}],
                 "dynamic_batching": {"priority_levels": levels}}
    if level is not None:
        cfg["parameters"] = {WAKE_LEVEL_PARAMETER: {"string_value": level}}
    return cfg


def test_the_parameter_name_is_spelled_the_same_by_the_config_writer_and_the_waker():
    assert batcher_wake.WAKE_LEVEL_PARAMETER == WAKE_LEVEL_PARAMETER


def test_the_wake_request_is_one_item_of_zeros_per_input_at_the_wake_level():
    body = json.loads(wake_body(_config(), 4))
    assert body["parameters"] == {"priority": 4}
    assert [(i["name"], i["shape"], i["datatype"], i["data"]) for i in body["inputs"]] == [
        ("ids", [1, 1], "INT64", [0]), ("text", [1, 1], "BYTES", [""]), ("flag", [1, 2, 3], "BOOL", [False] * 6)]
    unbatched = json.loads(wake_body(_config(batched=False), 4))
    assert [i["shape"] for i in unbatched["inputs"]] == [[1], [1], [2, 3]]


def test_only_models_that_declare_a_wake_level_are_woken_in_name_order():
    targets = wake_targets({"b": _config("b"), "a": _config("a", level="2", levels=2), "fifo": _config("fifo", level=None)})
    assert [(t.model, t.level) for t in targets] == [("a", 2), ("b", 4)]
    assert wake_level(_config(level=None)) is None


@pytest.mark.parametrize(("config", "message"), [
    pytest.param(_config(level="four"), "'four' is not a level", id="not-a-number"),
    pytest.param(_config(level="5", levels=4), "not one of its 4 priority levels", id="beyond-the-levels"),
    pytest.param(_config(level="1", levels=0), "not one of its 0 priority levels", id="no-levels"),
])
def test_a_bad_wake_level_is_refused_naming_the_model_and_the_parameter(config, message):
    with pytest.raises(ValueError, match=message) as err:
        wake_targets({"m": config})
    assert "'m'" in str(err.value)


@pytest.mark.parametrize(("inputs", "message"), [
    pytest.param([{"name": "x", "data_type": "TYPE_COMPLEX", "dims": ["1"]}], "input 'x': unsupported data_type", id="type"),
    pytest.param([], "has no inputs", id="no-inputs"),
])
def test_a_model_the_waker_cannot_address_is_refused_naming_what(inputs, message):
    with pytest.raises(ValueError, match=message):
        wake_body(_config(inputs=inputs), 4)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"url": "127.0.0.1"}, "http://host:port", id="no-port"),
    pytest.param({"url": "https://127.0.0.1:8000"}, "http://host:port", id="https"),
    pytest.param({"url": "127.0.0.1:8000", "period_s": 0}, "period_s must be > 0", id="period"),
    pytest.param({"url": "127.0.0.1:8000", "senders": 0}, "senders must be >= 1", id="senders"),
])
def test_bad_waker_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatcherWaker(**kwargs)


def test_the_sidecar_refuses_a_bad_period_before_it_connects(capsys):
    with pytest.raises(SystemExit):
        batcher_wake.main(["--period-ms", "0"])
    assert "--period-ms must be > 0" in capsys.readouterr().err


TRITON_TEXT = """\
nv_inference_request_success{model="m",version="1"} 10
nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 500
nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 2
nv_inference_request_duration_us{model="m",version="1"} 1000
"""


def test_rejections_sheds_and_wake_ups_are_not_failed_requests():
    assert not counts_as_failure("REJECTED") and counts_as_failure("BACKEND") and counts_as_failure(None)
    counters = parse_triton(TRITON_TEXT, "replica").counters
    assert counters[("m", "nv_inference_request_failure")] == 2
    assert parse_triton_model(TRITON_TEXT, "m") == (12.0, 2.0, 1000.0)  # answered, failed, us


def test_the_prometheus_error_query_leaves_rejections_out():
    from control.metrics_prometheus import PrometheusApiSource

    queries: list[str] = []

    class Recording(PrometheusApiSource):
        def query(self, promql: str, now_s: float):  # type: ignore[no-untyped-def, override]
            queries.append(promql)
            return []

    Recording("http://127.0.0.1:1").read(0.0)
    (failure,) = [q for q in queries if "nv_inference_request_failure" in q]
    assert 'reason!~"REJECTED"' in failure


def test_the_drain_check_does_not_take_wake_ups_for_traffic():
    from fleet.supervisor import _requests_seen

    class Replica:
        def metrics_text(self) -> str:
            return TRITON_TEXT + 'nv_inference_pending_request_count{model="m",version="1"} 3\n'

    assert _requests_seen(Replica()) == (3.0, 12.0)  # type: ignore[arg-type]
