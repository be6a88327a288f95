"""An onboarded image classifier as an ensemble (``--preprocess image:...``, ``--labels OUTPUT=FILE``):
the host steps' arithmetic, the description and Triton configs it becomes, and each unfit request's
precise error with nothing written.  No processes: the end-to-end test serves the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from model_repository.image_steps import ImagePreprocess, check_image_batch, labels_for, preprocess
from model_repository.onnx_inspect import OnboardingError
from model_repository.triton_config import ensemble_config
from model_repository.user_models import OutputTolerance, description_document, read_description, write_description
from profiler.onboarding import OnboardRequest, check_request, onboard
from router_lib.config import ConfigError
from tests.onboarding import onnx_builders as b

SPEC = ImagePreprocess(16, 16, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("store", "artifacts", "profiles", "inputs")}
    for p in d.values():
        p.mkdir()
    b.save(b.tiny_image_classifier(), d["inputs"] / "tiny.onnx")
    (d["inputs"] / "labels.txt").write_text("cat\ndog\nbird\nfish\n")
    return d


def _request(dirs: dict[str, Path], **kw) -> OnboardRequest:  # type: ignore[no-untyped-def]
    base = {"preprocess": "image:mean=127,std=128", "labels": ("class_ids", dirs["inputs"] / "labels.txt")}
    return OnboardRequest("tiny_image", kw.pop("onnx", dirs["inputs"] / "tiny.onnx"), dirs["store"],
                          dirs["artifacts"], dirs["profiles"], **{**base, **kw})


# --- the host steps ------------------------------------------------------------------------------

def test_preprocessing_centre_crops_normalises_and_puts_channels_first():
    image = np.full((1, 40, 60, 3), 127, dtype=np.uint8)
    image[..., 0] = 255  # red
    out = preprocess(image, SPEC)
    assert out.shape == (1, 3, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], 1.0)  # (255 - 127) / 128
    np.testing.assert_allclose(out[0, 1:], 0.0)


def test_preprocessing_keeps_the_centre_of_a_wide_photo():
    image = np.zeros((1, 32, 96, 3), dtype=np.uint8)
    image[:, :, 40:56] = 255  # a bright band in the middle third
    out = preprocess(image, ImagePreprocess(16, 16, (0.0,) * 3, (255.0,) * 3))
    assert out[0, :, :, 7:9].min() > 0.99  # the centre of the crop is the band


@pytest.mark.parametrize("images, problem", [
    (np.zeros((1, 16, 16, 3), dtype=np.float32), "must be uint8"),
    (np.zeros((1, 16, 16, 4), dtype=np.uint8), "[batch, height, width, 3]"),
    (np.zeros((16, 16, 3), dtype=np.uint8), "[batch, height, width, 3]"),
    (np.zeros((1, 4, 16, 3), dtype=np.uint8), "at least 8x8"),
], ids=["float", "four-channels", "no-batch-axis", "too-small"])
def test_an_unfit_image_batch_is_named(images, problem):
    assert problem in (check_image_batch(images) or "")


def test_class_ids_become_label_bytes_and_an_unknown_id_says_so():
    got = labels_for(np.array([[0, 3], [9, 1]], dtype=np.int64), ["cat", "dog", "bird", "fish"])
    assert got.tolist() == [[b"cat", b"fish"], [b"class 9", b"dog"]]


# --- what onboarding makes of it ----------------------------------------------------------------

def test_preprocess_and_labels_make_an_ensemble_of_photos_in_and_labels_out(dirs):
    checked = check_request(_request(dirs))
    m = checked.model
    assert m.kind == "ensemble"
    assert m.composing_models == ("tiny_image_preprocess", "tiny_image_onnx", "tiny_image_labels")
    assert [(t.name, t.data_type, t.dims) for t in m.inputs] == [("IMAGE", "TYPE_UINT8", (-1, -1, 3))]
    assert [t.name for t in m.outputs] == ["scores", "class_ids", "labels"]
    assert checked.public_samples["IMAGE"].dtype == np.uint8  # what the profile sends
    assert checked.samples["image"].shape[1:] == (3, 16, 16)  # what the gate runs
    assert dict(m.preprocess.parameters) == {"height": "16", "width": "16", "mean": "127,127,127",
                                             "std": "128,128,128"}


def test_the_ensemble_wires_steps_by_tensor_name(dirs):
    cfg = ensemble_config(check_request(_request(dirs)).model)
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in cfg.ensemble_scheduling.step]
    assert steps == [
        ("tiny_image_preprocess", {"IMAGE": "IMAGE"}, {"image": "_image"}),
        ("tiny_image_onnx", {"image": "_image"}, {"scores": "scores", "class_ids": "class_ids"}),
        ("tiny_image_labels", {"class_ids": "class_ids"}, {"labels": "labels"}),
    ]


def test_the_description_round_trips_with_its_host_steps(dirs):
    checked = check_request(_request(dirs))
    doc = description_document(checked.model, placement=checked.placement,
                               tolerances={"scores": OutputTolerance()}, source={"onnx": "tiny.onnx"})
    path = write_description(dirs["store"], doc)
    model, tolerances = read_description(path, expected_name="tiny_image")
    assert model == checked.model.__class__(**{**checked.model.__dict__, "origin": str(path)})
    assert set(tolerances) == {"scores"}


def test_a_description_whose_steps_do_not_connect_is_refused(dirs):
    checked = check_request(_request(dirs))
    doc = description_document(checked.model, placement=checked.placement, tolerances={}, source={})
    doc["postprocess"]["inputs"][0]["name"] = "ids"
    path = dirs["store"] / "tiny_image.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"postprocess.*inputs \['ids'\] are produced by no earlier step"):
        read_description(path, expected_name="tiny_image")


@pytest.mark.parametrize("change, message", [
    ({"onnx": "linear"}, "the graph must take one FLOAT input [batch, 3, H, W] with fixed H and W"),
    ({"preprocess": "video:fps=3"}, "unknown preprocessing 'video'; known: image"),
    ({"preprocess": "image:mean=grey"}, "mean must be a number or three numbers a/b/c"),
    ({"preprocess": "image:std=0"}, "std must be one number or three (a/b/c), all positive"),
    ({"preprocess": "image:scale=2"}, "unknown setting 'scale'; known: mean, std"),
    ({"labels": ("label_ids", None)}, "the model has no output 'label_ids'; outputs: ['scores', 'class_ids']"),
    ({"labels": ("scores", None)}, "output 'scores' is FP32; class ids must be INT64 or INT32"),
    ({"labels": ("class_ids", "two")}, "names 2 classes but output 'class_ids' returns class ids in 0..3"),
    ({"labels": ("class_ids", "missing")}, "file not found"),
    ({"labels": ("class_ids", "blank")}, "one non-empty class name per line"),
], ids=["not-an-image-graph", "unknown-kind", "bad-mean", "zero-std", "unknown-setting", "no-such-output",
        "float-ids", "too-few-labels", "no-label-file", "blank-line"])
def test_each_unfit_ensemble_request_gets_its_error_and_writes_nothing(dirs, change, message):
    files = {"two": "cat\ndog\n", "blank": "cat\n\ndog\nbird\n"}
    kw = dict(change)
    if kw.get("onnx") == "linear":
        kw["onnx"] = b.save(b.linear(), dirs["inputs"] / "linear.onnx")
        kw["labels"] = None
    if "labels" in kw and kw["labels"] is not None:
        output, which = kw["labels"]
        path = dirs["inputs"] / f"{which or 'labels'}.txt"
        if which in files:
            path.write_text(files[which])
        kw["labels"] = (output, path if which != "missing" else dirs["inputs"] / "nowhere.txt")
    before = {k: _tree(v) for k, v in dirs.items()}
    with pytest.raises(OnboardingError) as e:
        onboard(_request(dirs, **kw))
    assert message in str(e.value)
    assert {k: _tree(v) for k, v in dirs.items()} == before


def test_an_accelerator_estimate_adds_the_host_steps_measured_time():
    from model_repository.estimates import FlopCount, estimate_document

    common = {"model": "m", "accelerator": "gpu", "max_batch_size": 16, "flops": FlopCount(7.7e8, 50, 0),
              "placement": "accelerator", "cpu_latency_ms_by_batch": {1: 15.0, 16: 350.0}, "cpu_p99_over_p50": 1.5,
              "date": "2026-11-29"}
    bare = estimate_document(**common)
    with_host = estimate_document(**common, host_ms_by_batch={1: 2.0, 16: 32.0})
    assert with_host["latency_ms_by_batch"][1] == pytest.approx(bare["latency_ms_by_batch"][1] + 2.0)
    assert with_host["latency_ms_by_batch"][8] == pytest.approx(bare["latency_ms_by_batch"][8] + 16.0)  # interpolated
    assert "host steps' compute measured in m.cpu.yaml" in with_host["provenance"]["source"]
    assert with_host["provenance"]["source"].startswith("ESTIMATE")


def test_a_step_name_of_an_onboarded_ensemble_is_taken_but_replace_frees_its_own(dirs):
    checked = check_request(_request(dirs))
    write_description(dirs["store"], description_document(checked.model, placement=checked.placement,
                                                          tolerances={}, source={}))
    with pytest.raises(OnboardingError, match="'tiny_image_onnx' is already taken: a step of the onboarded model "
                                              "'tiny_image'"):
        check_request(OnboardRequest("tiny_image_onnx", dirs["inputs"] / "tiny.onnx", dirs["store"],
                                     dirs["artifacts"], dirs["profiles"]))
    assert check_request(_request(dirs, replace=True)).model.kind == "ensemble"
