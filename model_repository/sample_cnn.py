"""A real image classifier to onboard, built offline: ``python -m model_repository.sample_cnn --out DIR``.

Nothing can be downloaded at run time, so the sample is trained here, from packages: a small CNN
(two 3x3 convolutions, global pooling, a linear layer; 5.1k parameters) trained with torch on
scikit-learn's bundled ``load_digits`` (8x8 grey images, 1797 of them), 75/25 stratified split,
exported to ONNX (opset 17) with a dynamic batch axis.  It is what a user would bring: a model file
with its own contract, served through ``python -m model_repository add`` like any other.

Contract: input ``image`` float32 ``[batch, 1, 8, 8]`` (pixel values 0..16 as load_digits gives
them; the graph scales them), outputs ``probabilities`` float32 ``[batch, 10]`` (softmax) and
``label`` int64 ``[batch, 1]`` (argmax).  Written to ``DIR``: ``digits_cnn.onnx``,
``digits_cnn.torchscript.pt`` (the same module traced: what Neuron compiles), ``digits_cnn.holdout.npz``
(the held-out images and labels), ``digits_cnn.inputs.npz`` (64 held-out images: sample inputs for
the accuracy gate) and ``digits_cnn.json`` (held-out accuracy).  Deterministic (seeded, one thread);
about 5 s on this machine, cached by a stamp of this file and the package versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

NAME = "digits_cnn"
EPOCHS = 60


def _stamp() -> str:
    from importlib.metadata import version

    h = hashlib.sha256(Path(__file__).read_bytes())
    for pkg in ("torch", "scikit-learn", "onnx"):
        h.update(f"{pkg}={version(pkg)}".encode())
    return h.hexdigest()[:16]


def _module():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.head = nn.Linear(32, 10)

        def logits(self, image: torch.Tensor) -> torch.Tensor:
            x = self.features(image / 16.0)
            return self.head(x.mean(dim=(2, 3)))

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            probs = torch.softmax(self.logits(image), dim=1)
            return probs, probs.argmax(dim=1, keepdim=True)

    return DigitsCNN()


def build(out: Path, force: bool = False) -> dict[str, float | int | str]:
    """Train, export and write the sample into ``out``; -> its summary (cached)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / f"{NAME}.json"
    key = _stamp()
    if not force and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("stamp") == key and (out / f"{NAME}.onnx").exists():
            return dict(summary)
    t0 = time.monotonic()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 1, 8, 8).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = _module()
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test))[1].numpy().reshape(-1)
    accuracy = float((predicted == y_test).mean())
    example = torch.from_numpy(x_test[:2])
    onnx_path = out / f"{NAME}.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["probabilities", "label"],
                          dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}, "label": {0: "batch"}})
        torch.jit.trace(model, (example,)).save(str(out / f"{NAME}.torchscript.pt"))
    np.savez(out / f"{NAME}.holdout.npz", image=x_test, label=y_test)
    np.savez(out / f"{NAME}.inputs.npz", image=x_test[:64])
    summary = {"stamp": key, "holdout_accuracy": round(accuracy, 4), "holdout_images": int(len(y_test)),
               "train_images": int(len(y_train)), "epochs": EPOCHS,
               "parameters": int(sum(p.numel() for p in model.parameters())),
               "seconds": round(time.monotonic() - t0, 1)}
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model_repository.sample_cnn", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "build" / "samples")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    s = build(args.out, args.force)
    print(f"{NAME}: held-out accuracy {s['holdout_accuracy']:.4f} on {s['holdout_images']} images "
          f"({s['parameters']} parameters) -> {args.out / (NAME + '.onnx')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
