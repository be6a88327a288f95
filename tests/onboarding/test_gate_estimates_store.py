"""The pure parts of onboarding: the generic accuracy gate's verdicts, the FLOP count and the
estimate it becomes, the user-model store (load, merge with the built-ins, remove, list), and the
Triton configs of an onboarded model on each target."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_repository.__main__ import listing, remove
from model_repository.definitions import USER_MODELS_ENV, load_models
from model_repository.estimates import BASES, count_flops, estimate_document
from model_repository.model_types import TensorSpec
from model_repository.onnx_inspect import placement_for, signature_of, tensorrt_shapes
from model_repository.triton_config import Target, accelerated_config, to_pbtxt
from model_repository.user_models import OutputTolerance, read_description
from profiler.accuracy_generic import compare_outputs, generate_samples, generic_check
from router_lib.config import ConfigError, load_profile
from tests.onboarding import onnx_builders as b

# --- the gate ------------------------------------------------------------------------------------


def test_float_outputs_within_tolerance_pass_and_report_argmax_agreement():
    ref = {"p": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}
    got = {"p": ref["p"] + 5e-5}
    v = compare_outputs(got, ref, {})
    assert v.passed and v.metrics["p.argmax_agreement"] == 1.0
    assert v.metrics["p.max_abs_diff"] == pytest.approx(5e-5, rel=1e-2)


def test_float_outputs_outside_tolerance_fail_naming_the_output_and_the_count():
    ref = {"p": np.zeros((4, 3), np.float32)}
    got = {"p": np.zeros((4, 3), np.float32)}
    got["p"][1, 2] = 0.01
    v = compare_outputs(got, ref, {})
    assert not v.passed
    assert "p: max abs diff 0.01 (atol 0.0001, rtol 0.001), 1 of 12 elements outside" in v.message


def test_a_looser_per_output_tolerance_admits_the_same_difference():
    ref = {"p": np.zeros((4, 3), np.float32)}
    got = {"p": ref["p"] + 0.01}
    assert compare_outputs(got, ref, {"p": OutputTolerance(atol=0.02)}).passed


def test_integer_outputs_are_judged_by_row_agreement():
    ref = {"label": np.array([[1], [2], [3], [4]], np.int64)}
    got = {"label": np.array([[1], [2], [3], [0]], np.int64)}
    assert not compare_outputs(got, ref, {}).passed
    v = compare_outputs(got, ref, {"label": OutputTolerance(min_agreement=0.75)})
    assert v.passed and v.metrics["label.agreement"] == 0.75


def test_a_shape_change_fails_the_gate():
    v = compare_outputs({"y": np.zeros((2, 3))}, {"y": np.zeros((2, 4))}, {})
    assert not v.passed and "shape [2, 3] != reference [2, 4]" in v.message


def test_generated_samples_follow_the_spec_and_are_seeded():
    specs = [TensorSpec("x", "TYPE_FP32", (3, -1)), TensorSpec("ids", "TYPE_INT64", (5,)),
             TensorSpec("img", "TYPE_UINT8", (2, 2)), TensorSpec("m", "TYPE_BOOL", (1,))]
    a, c = generate_samples(specs, count=4), generate_samples(specs, count=4)
    assert a["x"].shape == (4, 3, 8) and a["x"].dtype == np.float32
    assert a["ids"].dtype == np.int64 and 0 <= a["ids"].min() and a["ids"].max() < 10
    assert a["img"].dtype == np.uint8 and a["m"].dtype == np.bool_
    assert all(np.array_equal(a[k], c[k]) for k in a)


def test_the_generic_check_accepts_the_reference_model_and_rejects_another(tmp_path):
    good = b.save(b.linear(), tmp_path / "good.onnx")
    other = b.linear()
    other.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array([0.5, 0.5, 0.5], np.float32), "B"))
    worse = b.save(other, tmp_path / "worse.onnx")
    samples = generate_samples([TensorSpec("x", "TYPE_FP32", (4,))], count=16)
    from profiler.accuracy_generic import run_onnx

    reference = run_onnx(good, samples, ["y", "label"], 8)
    check = generic_check(samples, reference, {}, 8)
    assert check(good).passed
    verdict = check(worse)
    assert not verdict.passed and "y: max abs diff" in verdict.message


# --- estimates -----------------------------------------------------------------------------------


def test_flops_of_a_matmul_and_a_conv_are_counted_exactly():
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "W")
    m = numpy_helper.from_array(np.zeros((8 * 6 * 6, 10), np.float32), "M")
    shape = numpy_helper.from_array(np.array([-1, 8 * 6 * 6], np.int64), "S")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Reshape", ["c", "S"], ["f"]),
         helper.make_node("MatMul", ["f", "M"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], [w, m, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    flops = count_flops(model)
    conv = 2 * (8 * 6 * 6) * (3 * 3 * 3)
    matmul = 2 * (8 * 6 * 6) * 10
    assert flops.flops_per_item == conv + matmul
    assert (flops.counted_nodes, flops.uncounted_nodes) == (2, 0)


def test_an_accelerator_estimate_is_a_loadable_profile_labelled_as_an_estimate(tmp_path):
    flops = count_flops(b.linear())
    doc = estimate_document(model="m", accelerator="inferentia", max_batch_size=16, flops=flops, placement="accelerator",
                            cpu_latency_ms_by_batch={1: 0.5}, cpu_p99_over_p50=2.0, date="2026-11-29")
    path = tmp_path / "m.inferentia.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    profile = load_profile(path)
    assert profile.provenance.kind == "reference" and profile.provenance.source.startswith("ESTIMATE")
    assert "text_embedding.inferentia.yaml" in profile.provenance.source
    assert sorted(profile.latency_ms_by_batch) == [1, 8, 16]
    assert profile.latency_ms_by_batch[1] == pytest.approx(BASES["inferentia"].fixed_ms, abs=1e-3)
    assert profile.instances_per_replica == 2


def test_a_host_cpu_estimate_is_the_measured_cpu_table():
    doc = estimate_document(model="t", accelerator="gpu", max_batch_size=8, flops=None, placement="host_cpu",
                            cpu_latency_ms_by_batch={1: 0.4, 8: 0.6, 64: 0.9}, cpu_p99_over_p50=2.5, date="2026-11-29")
    assert doc["latency_ms_by_batch"] == {1: 0.4, 8: 0.6} and doc["p99_over_p50"] == 2.5
    assert "host CPU of g5.xlarge" in doc["provenance"]["source"]


# --- placement and configs -----------------------------------------------------------------------


def test_a_tree_ensemble_runs_on_the_host_cpu_of_both_accelerators():
    sig = signature_of(b.tree_ensemble())
    placement = placement_for(sig, has_torchscript=True)
    assert {a: p for a, (p, _) in placement.items()} == {"gpu": "host_cpu", "inferentia": "host_cpu"}
    assert "ai.onnx.ml.TreeEnsembleClassifier" in placement["gpu"][1]


def test_a_neural_network_is_compiled_for_gpu_and_for_inferentia_only_with_torchscript():
    sig = signature_of(b.linear())
    assert placement_for(sig, has_torchscript=False)["inferentia"][0] == "host_cpu"
    assert placement_for(sig, has_torchscript=True)["inferentia"][0] == "accelerator"
    assert tensorrt_shapes(sig, 32) == {"x": ((1, 4), (8, 4), (32, 4))}


def _store_with(tmp_path, name="onboarded_one", host_cpu_on="inferentia"):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    (store / f"{name}.yaml").write_text(
        f"name: {name}\ndescription: test\nmax_batch_size: 8\n"
        "inputs: [{name: x, data_type: TYPE_FP32, dims: [4]}]\n"
        "outputs: [{name: y, data_type: TYPE_FP32, dims: [3]}, {name: label, data_type: TYPE_INT64, dims: []}]\n"
        f"artifact: {name}.onnx\nplacement: {{gpu: {{runs_on: accelerator, reason: r}}, "
        f"{host_cpu_on}: {{runs_on: host_cpu, reason: r}}}}\naccuracy: {{label: {{min_agreement: 0.9}}}}\n")
    return store


def test_the_configs_of_an_onboarded_model_per_target(tmp_path):
    model, tolerances = read_description(_store_with(tmp_path) / "onboarded_one.yaml")
    assert tolerances["label"].min_agreement == 0.9
    cpu = to_pbtxt(accelerated_config(model, Target("cpu")))
    inf = to_pbtxt(accelerated_config(model, Target("inferentia", instances=2)))
    gpu = to_pbtxt(accelerated_config(model, Target("gpu")))
    assert 'backend: "onnxruntime"' in cpu and 'backend: "onnxruntime"' in inf and "KIND_CPU" in inf
    assert 'platform: "tensorrt_plan"' in gpu
    assert "reshape {" in cpu  # the [batch] label is served as dims [1] reshaped to []


# --- the store -----------------------------------------------------------------------------------


def test_load_models_adds_the_onboarded_models_from_the_env_store(tmp_path, monkeypatch):
    monkeypatch.setenv(USER_MODELS_ENV, str(_store_with(tmp_path)))
    models = load_models()
    assert {"text_embedding", "digits_classifier", "onboarded_one"} <= set(models)
    assert models["onboarded_one"].host_cpu_on == frozenset({"inferentia"})
    assert models["digits_classifier"].origin == "built-in"


def test_an_onboarded_model_named_like_a_built_in_one_is_refused_at_load(tmp_path):
    store = _store_with(tmp_path, name="digits_classifier")
    with pytest.raises(ConfigError, match="'digits_classifier' is already a built-in model"):
        load_models(user_dir=store)


def test_a_description_whose_file_name_differs_from_its_name_is_refused(tmp_path):
    store = _store_with(tmp_path)
    (store / "onboarded_one.yaml").rename(store / "renamed.yaml")
    with pytest.raises(ConfigError, match="name: must be 'renamed'"):
        load_models(user_dir=store)


def test_remove_deletes_the_description_artifacts_and_profiles_and_refuses_built_ins(tmp_path):
    store = _store_with(tmp_path)
    art, prof = tmp_path / "art", tmp_path / "prof"
    art.mkdir()
    prof.mkdir()
    for f in ("onboarded_one.onnx", "onboarded_one.samples.npz", "digits_classifier.onnx"):
        (art / f).write_bytes(b"x")
    (prof / "onboarded_one.cpu.yaml").write_text("model: onboarded_one\n")
    (prof / "digits_classifier.cpu.yaml").write_text("model: digits_classifier\n")
    assert "| onboarded_one | x FP32 [4] |" in listing(store, art, prof)
    removed = remove("onboarded_one", store, art, prof)
    assert {p.name for p in removed} == {"onboarded_one.yaml", "onboarded_one.onnx", "onboarded_one.samples.npz",
                                         "onboarded_one.cpu.yaml"}
    assert sorted(p.name for p in art.iterdir()) == ["digits_classifier.onnx"]
    assert sorted(p.name for p in prof.iterdir()) == ["digits_classifier.cpu.yaml"]
    with pytest.raises(ValueError, match="built-in model"):
        remove("digits_classifier", store, art, prof)
    with pytest.raises(ValueError, match="no onboarded model 'ghost'"):
        remove("ghost", store, art, prof)
    assert "no onboarded models" in listing(store, art, prof)


def test_the_profiler_gates_an_onboarded_model_with_the_generic_check(tmp_path, monkeypatch):
    """`python -m profiler compile --model <onboarded>` used to stop at "no accuracy reference"."""
    import argparse

    from profiler.__main__ import _check_for

    store = _store_with(tmp_path, name="lin")
    (store / "lin.yaml").write_text((store / "lin.yaml").read_text().replace("dims: []}", "dims: [1]}"))
    art = tmp_path / "art"
    art.mkdir()
    b.save(b.linear(), art / "lin.onnx")
    monkeypatch.setenv(USER_MODELS_ENV, str(store))
    check = _check_for("lin", art, argparse.Namespace(min_cosine=0.98, max_accuracy_drop=0.005))
    assert check(art / "lin.onnx").passed
    other = b.linear()
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3), np.float32), "W"))
    assert not check(b.save(other, tmp_path / "other.onnx")).passed


def test_the_gpu_image_build_gives_onboarded_models_their_engine_shapes(tmp_path, monkeypatch):
    """``model_repository.tensorrt.build_engines`` (the GPU image's build stage) builds an onboarded
    model's engine with its own optimisation profile and skips one placed on the host CPU."""
    from model_repository.tensorrt import Toolchain, build_engines, onboarded_shapes, trtexec_command

    store = _store_with(tmp_path, name="lin", host_cpu_on="inferentia")
    _store_with(tmp_path, name="forest", host_cpu_on="gpu")
    monkeypatch.setenv(USER_MODELS_ENV, str(store))
    shapes, skip = onboarded_shapes()
    assert shapes == {"lin.onnx": {"x": ((1, 4), (8, 4), (8, 4))}} and skip == {"forest.onnx"}
    cmd = trtexec_command("trtexec", tmp_path / "lin.onnx", tmp_path / "lin.plan", shapes=shapes["lin.onnx"])
    assert "--minShapes=x:1x4" in cmd and "--maxShapes=x:8x4" in cmd
    models = tmp_path / "models"
    models.mkdir()
    for f in ("lin.onnx", "forest.onnx"):
        (models / f).write_bytes(b"")
    assert build_engines(models, Toolchain("trtexec", trtexec="/bin/true")) == "built lin.plan"
