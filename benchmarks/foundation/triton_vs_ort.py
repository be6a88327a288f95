"""CPU pool embedding throughput: real Triton (ensemble: tokenizer -> ONNX Runtime) against raw
in-process ONNX Runtime on the same sentences with the same number of compute threads.

Run: ``make benchmark-foundation`` (or ``python -m benchmarks.foundation.triton_vs_ort``).
Rounds alternate Triton and raw ORT so that noise on this shared machine hits both alike; the
ratio is taken per round and the median reported.  Target: Triton >= 0.8x raw.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tqdm import tqdm

from benchmarks.common import ROOT, write_results
from fleet.triton_process import TritonProcess, prepare_backend_dir
from localnet.signals import interrupt_on_stop_signals
from model_repository.build import load_sentences
from model_repository.definitions import load_models
from model_repository.ort_runner import make_session
from model_repository.text_tokenizer import BucketTokenizer
from model_repository.triton_config import Target, write_repository

THREADS = 2  # this machine's cores: Triton runs 2 model instances x 1 intra-op thread


def raw_ort(artifacts: Path, sentences: list[str], seconds: float, batch: int = 1) -> float:
    """Sentences/s: THREADS workers, each its own 1-thread session, tokenise + run ``batch``
    sentences at a time (1: one request each, as clients send them; >1: the batching Triton's
    dynamic batcher can do under load, done by hand -- the stricter baseline)."""
    tok = BucketTokenizer(artifacts / "tokenizer.json", (16, 32, 64, 128, 256))
    sessions = [make_session(str(artifacts / "text_embedding.onnx"), 1) for _ in range(THREADS)]
    counts = [0] * THREADS
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        k = i
        while time.perf_counter() < stop:
            ids, mask = tok.encode([sentences[(k + j) % len(sentences)] for j in range(batch)])
            sessions[i].run(None, {"input_ids": ids, "attention_mask": mask})
            counts[i] += batch
            k += THREADS * batch

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def triton(url: str, sentences: list[str], seconds: float, concurrency: int) -> float:
    """Sentences/s: ``concurrency`` async requests in flight, one sentence each."""
    client = grpcclient.InferenceServerClient(url)
    done = 0
    lock = threading.Condition()
    stop = time.perf_counter() + seconds
    inputs = []
    for s in sentences:
        inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[s.encode()]], dtype=object))
        inputs.append(inp)
    in_flight = 0
    errors: list[Exception] = []

    def callback(result, error):  # type: ignore[no-untyped-def]
        nonlocal done, in_flight
        with lock:
            if error is not None:
                errors.append(error)
            done += 1
            in_flight -= 1
            lock.notify()

    t0 = time.perf_counter()
    k = 0
    with lock:
        while time.perf_counter() < stop and not errors:
            while in_flight < concurrency:
                client.async_infer("text_embedding", [inputs[k % len(inputs)]], callback)
                in_flight += 1
                k += 1
            lock.wait(0.5)
        while in_flight:
            lock.wait(1.0)
    if errors:
        raise RuntimeError(f"Triton request failed: {errors[0]}")
    elapsed = time.perf_counter() - t0
    client.close()
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    sentences = load_sentences()
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repository(Path(tmp) / "repo", [(load_models()["text_embedding"], Target("cpu", instances=THREADS))],
                                args.artifacts)
        server = TritonProcess("bench-cpu", repo, prepare_backend_dir(Path(tmp) / "backends"), Path(tmp) / "triton.log")
        server.start()
        try:
            server.wait_ready()
            triton(server.grpc_url, sentences, 2.0, args.concurrency)  # warm-up
            raw_ort(args.artifacts, sentences, 2.0)
            rows = []
            for _ in tqdm(range(args.rounds), desc="rounds (Triton, raw ORT)"):
                t = triton(server.grpc_url, sentences, args.seconds, args.concurrency)
                r = raw_ort(args.artifacts, sentences, args.seconds)
                rb = raw_ort(args.artifacts, sentences, args.seconds, batch=args.concurrency // THREADS)
                rows.append({"triton_per_s": t, "raw_ort_per_s": r, "ratio": t / r,
                             "raw_ort_batched_per_s": rb, "ratio_vs_batched": t / rb})
        finally:
            server.stop()
    ratio = statistics.median(r["ratio"] for r in rows)
    ratio_b = statistics.median(r["ratio_vs_batched"] for r in rows)
    results = {
        "rounds": rows, "median_ratio": ratio, "median_ratio_vs_batched": ratio_b, "target_ratio": 0.8,
        "met": ratio >= 0.8,
        "median_triton_per_s": statistics.median(r["triton_per_s"] for r in rows),
        "median_raw_ort_per_s": statistics.median(r["raw_ort_per_s"] for r in rows),
        "settings": {"threads": THREADS, "concurrency": args.concurrency, "seconds": args.seconds,
                     "sentences": len(sentences)},
    }
    md = ["# CPU pool: Triton vs raw ONNX Runtime (text_embedding)", "",
          f"Same {len(sentences)} sentences, {THREADS} compute threads each side, {args.concurrency} requests in flight to Triton.", "",
          f"Raw ORT runs each sentence as its own call (as clients send them) and, as a stricter baseline, "
          f"in hand-made batches of {args.concurrency // THREADS} (what Triton's dynamic batcher can form under this load).", "",
          "| round | Triton sentences/s | raw ORT sentences/s | ratio | raw ORT batched | ratio vs batched |",
          "|---|---|---|---|---|---|"]
    md += [f"| {i + 1} | {r['triton_per_s']:.1f} | {r['raw_ort_per_s']:.1f} | {r['ratio']:.2f} | "
           f"{r['raw_ort_batched_per_s']:.1f} | {r['ratio_vs_batched']:.2f} |" for i, r in enumerate(rows)]
    md += ["", f"**Median ratio: {ratio:.2f}x** vs per-request raw ORT (target >= 0.8x): {'met' if ratio >= 0.8 else 'NOT met'}; "
           f"{ratio_b:.2f}x vs hand-batched raw ORT."]
    json_path, _ = write_results(args.out, "triton_vs_ort", results, "\n".join(md))
    print("\n".join(md))
    print(f"results: {json_path}")
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
