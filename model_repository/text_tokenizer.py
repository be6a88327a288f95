"""Tokenisation for the text_embedding ensemble, as a plain module.

The Triton tokenizer step (``python_models/tokenizer/model.py``) is a thin adapter over this, so
unit tests and the build script use the same code.  Each batch is padded to the smallest bucket
that holds its longest sequence: Triton's dynamic batcher only merges requests of equal shape, so
buckets keep batching effective without padding every request to the maximum length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class BucketTokenizer:
    def __init__(self, tokenizer_json: Path | str, buckets: Sequence[int]) -> None:
        if not buckets or list(buckets) != sorted(buckets):
            raise ValueError(f"buckets must be ascending, got {list(buckets)}")
        self.buckets = tuple(buckets)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.buckets[-1])

    def bucket_for(self, length: int) -> int:
        for b in self.buckets:
            if length <= b:
                return b
        return self.buckets[-1]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> (input_ids, attention_mask), both int64 [len(texts), bucket]."""
        encodings = self.tokenizer.encode_batch(list(texts))
        width = self.bucket_for(max((len(e.ids) for e in encodings), default=1))
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = min(len(e.ids), width)
            ids[i, :n] = e.ids[:n]
            mask[i, :n] = 1
        return ids, mask


def decode_text_tensor(array: np.ndarray) -> list[str]:
    """Triton TYPE_STRING tensors arrive as numpy object arrays of bytes, shape [batch, 1]."""
    out = []
    for item in array.reshape(-1):
        out.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
    return out
