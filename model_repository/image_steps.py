"""The host steps of an onboarded image classifier, as plain functions.

An image model's accelerated step wants a float ``[batch, 3, H, W]`` tensor; clients have photos.
The ensemble's first step (``python_models/image_preprocess``) turns a uint8 ``[batch, height,
width, 3]`` RGB tensor into that, on the instance's host CPU on every target; its last step
(``python_models/class_labels``) turns the class ids the graph returns into label strings.  The
Triton models are thin adapters over this module, so the build script, the onboarding's accuracy
gate and the tests compute exactly what the pools serve.

Preprocessing is the ImageNet evaluation recipe: resize the shorter side to ``crop / 0.875`` (256
for a 224 crop) with bilinear filtering, centre-crop ``H x W``, then ``(pixel - mean) / std`` per
channel.  ``mean``/``std`` are the model's own (EfficientNet-Lite: 127/128, torchvision models:
0.485..0.406 x 255 / 0.229..0.225 x 255); they are given at onboarding and recorded in the
description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CROP_FRACTION = 0.875  # the ImageNet evaluation convention: 224 of 256


@dataclass(frozen=True)
class ImagePreprocess:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_shorter_to(self) -> int:
        return int(round(max(self.height, self.width) / CROP_FRACTION))

    def parameters(self) -> dict[str, str]:
        """As Triton model parameters (strings)."""
        return {"height": str(self.height), "width": str(self.width),
                "mean": ",".join(f"{v:g}" for v in self.mean), "std": ",".join(f"{v:g}" for v in self.std)}

    @classmethod
    def from_parameters(cls, p: dict[str, str]) -> ImagePreprocess:
        def three(key: str) -> tuple[float, float, float]:
            v = [float(x) for x in p[key].split(",")]
            return (v[0], v[0], v[0]) if len(v) == 1 else (v[0], v[1], v[2])

        return cls(int(p["height"]), int(p["width"]), three("mean"), three("std"))


def check_image_batch(images: np.ndarray) -> str | None:
    """None when ``images`` is a uint8 ``[batch, height, width, 3]`` tensor; otherwise why not."""
    if images.dtype != np.uint8:
        return f"images must be uint8, got {images.dtype}"
    if images.ndim != 4 or images.shape[-1] != 3:
        return f"images must be [batch, height, width, 3] (RGB, HWC), got shape {list(images.shape)}"
    if images.shape[1] < 8 or images.shape[2] < 8:
        return f"images must be at least 8x8 pixels, got {images.shape[1]}x{images.shape[2]}"
    return None


def preprocess(images: np.ndarray, spec: ImagePreprocess) -> np.ndarray:
    """uint8 ``[batch, height, width, 3]`` -> float32 ``[batch, 3, spec.height, spec.width]``."""
    from PIL import Image

    problem = check_image_batch(images)
    if problem:
        raise ValueError(problem)
    out = np.empty((images.shape[0], 3, spec.height, spec.width), dtype=np.float32)
    target = spec.resize_shorter_to
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        scale = target / min(h, w)
        size = (max(spec.width, round(w * scale)), max(spec.height, round(h * scale)))  # PIL: (width, height)
        resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
        top, left = (resized.shape[0] - spec.height) // 2, (resized.shape[1] - spec.width) // 2
        crop = resized[top:top + spec.height, left:left + spec.width]
        out[i] = ((crop - mean) * inv_std).transpose(2, 0, 1)
    return out


def read_labels(path: Path) -> list[str]:
    """One class name per line, line k naming class id k; ``ValueError`` names an unusable file."""
    if not path.is_file():
        raise ValueError(f"--labels {path}: file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or any(not line.strip() for line in lines):
        raise ValueError(f"--labels {path}: must hold one non-empty class name per line (line k names class k)")
    return [line.strip() for line in lines]


def labels_for(class_ids: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Class ids (any integer shape) -> the same shape of UTF-8 label bytes (Triton BYTES).  An id
    outside the label list becomes ``class <id>`` rather than failing the request."""
    flat = [labels[i].encode() if 0 <= i < len(labels) else f"class {i}".encode() for i in class_ids.reshape(-1).tolist()]
    return np.array(flat, dtype=object).reshape(class_ids.shape)
