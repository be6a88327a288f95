"""Checking a finished embedding job against a direct ONNX Runtime run of the same model.

Only rows answered by pools with real outputs are evidence; rows from pools in synthetic-output
mode (zeros of the right shape) are counted apart and never compared.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repository.definitions import ModelDefinition
from router_lib.domain import EmulatedOutputs, Fleet


@dataclass(frozen=True)
class ReferenceCheck:
    compared: int
    max_abs_diff: float
    synthetic_rows: int  # answered by synthetic-output pools: not compared
    real_rows: int

    def to_json(self) -> dict[str, float | int]:
        return {"compared": self.compared, "max_abs_diff": self.max_abs_diff, "synthetic_rows": self.synthetic_rows,
                "real_output_rows": self.real_rows}


def synthetic_pools(fleet: Fleet) -> set[str]:
    return {p.name for p in fleet.pools if p.emulated and p.outputs is EmulatedOutputs.SYNTHETIC}


def check_embeddings(*, model: ModelDefinition, artifacts: Path, inputs: Path, results: Path,
                     row_pools: Mapping[int, str | None], fleet: Fleet, sample: int = 1000, seed: int = 0
                     ) -> ReferenceCheck:
    """Max abs difference between the job's EMBEDDING and ORT's, on a random sample of the rows
    answered by real-output pools (each sentence run alone, as its own batch)."""
    from model_repository.ort_runner import make_session
    from model_repository.text_tokenizer import BucketTokenizer

    assert model.tokenizer is not None, "check_embeddings is for the text_embedding ensemble"
    # the job's normalised input copy (valid rows only, so row i is line i)
    texts = [json.loads(line)["inputs"]["TEXT"][0] for line in inputs.read_text().splitlines() if line.strip()]
    synthetic = synthetic_pools(fleet)
    real = sorted(i for i, pool in row_pools.items() if pool is not None and pool not in synthetic)
    n_synth = sum(1 for pool in row_pools.values() if pool in synthetic)
    picked = set(random.Random(seed).sample(real, min(sample, len(real))))
    got: dict[int, np.ndarray] = {}
    with open(results) as f:  # a large job's results do not fit in memory as Python floats: parse the sample only
        for i, line in enumerate(f):
            if i in picked:
                row = json.loads(line)
                if "EMBEDDING" in row:
                    got[i] = np.asarray(row["EMBEDDING"], dtype=np.float32)
    tok = BucketTokenizer(artifacts / "tokenizer.json", model.tokenizer.pad_buckets)
    session = make_session(str(artifacts / model.accelerated.artifact), 2)
    worst = 0.0
    for i, embedding in sorted(got.items()):
        ids, mask = tok.encode([texts[i]])
        expected = session.run(None, {"input_ids": ids, "attention_mask": mask})[0][0]
        worst = max(worst, float(np.max(np.abs(embedding - expected))))
    return ReferenceCheck(len(got), worst, n_synth, len(real))
