"""The mixed-tier workload: one locust user class per (tier, model), over gRPC and HTTP.

Headless (what the demo and the benchmark run)::

    LOAD_SHAPE=step LOAD_DURATION_S=90 LOAD_RECORDS_PATH=build/demo/requests.jsonl \\
      python -m locust -f locustfiles/mixed_tiers.py --headless --csv build/demo/locust \\
      -H http://127.0.0.1:8000

Web UI: ``LOAD_SHAPE=all python -m locust -f locustfiles/mixed_tiers.py --class-picker
-H http://127.0.0.1:8000`` (pick a shape and users in the browser).  gRPC goes to
``LOAD_GRPC_TARGET`` (default: the -H host, port 8001).  Only 127.0.0.1 is accepted.

The mix (at ``LOAD_BASE_USERS=12``, about 40 req/s): interactive search embeddings (gold, gRPC),
recommendation refreshes (silver, HTTP), re-indexing in batches of 8 (bronze, gRPC); form checks
(gold, HTTP), back-office classification (silver, gRPC) and bulk re-scoring in batches of 32
(bronze, HTTP).  ``weight`` = users per 12; ``requests_per_s`` = each user's pace (closed loop:
a user waits for its response, so a slow pool lowers the offered load, which the report shows).
"""

from __future__ import annotations

import os

from locust import task

from locustfiles.payloads import DIGITS_CLASSIFIER, TEXT_EMBEDDING
from locustfiles.shapes import SHAPES
from locustfiles.users import GrpcInferenceUser, HttpInferenceUser


class GoldEmbeddingGrpc(GrpcInferenceUser):
    model, tier, weight, requests_per_s = TEXT_EMBEDDING, "gold", 3, 3.0

    @task
    def embed(self) -> None:
        self.infer()


class SilverEmbeddingHttp(HttpInferenceUser):
    model, tier, weight, requests_per_s = TEXT_EMBEDDING, "silver", 2, 3.0

    @task
    def embed(self) -> None:
        self.infer()


class BronzeEmbeddingBatchGrpc(GrpcInferenceUser):
    model, tier, weight, requests_per_s, batch_size = TEXT_EMBEDDING, "bronze", 1, 1.0, 8

    @task
    def embed_batch(self) -> None:
        self.infer()


class GoldDigitsHttp(HttpInferenceUser):
    model, tier, weight, requests_per_s = DIGITS_CLASSIFIER, "gold", 2, 4.0

    @task
    def classify(self) -> None:
        self.infer()


class SilverDigitsGrpc(GrpcInferenceUser):
    model, tier, weight, requests_per_s = DIGITS_CLASSIFIER, "silver", 2, 4.0

    @task
    def classify(self) -> None:
        self.infer()


class BronzeDigitsBatchHttp(HttpInferenceUser):
    model, tier, weight, requests_per_s, batch_size = DIGITS_CLASSIFIER, "bronze", 2, 1.0, 32

    @task
    def classify_batch(self) -> None:
        self.infer()


# Locust runs the first shape class it finds in this module, so export only the selected one
# (LOAD_SHAPE, default steady); LOAD_SHAPE=all exports all three for --class-picker.
_selected = os.environ.get("LOAD_SHAPE", "steady")
if _selected == "all":
    SteadyShape, StepShape, BurstShape = SHAPES["steady"], SHAPES["step"], SHAPES["burst"]
elif _selected in SHAPES:
    globals()[SHAPES[_selected].__name__] = SHAPES[_selected]
else:
    raise SystemExit(f"LOAD_SHAPE must be one of {sorted(SHAPES)} or 'all', got {_selected!r}")
