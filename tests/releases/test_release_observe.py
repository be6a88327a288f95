"""Release observations from Envoy and Triton text, over a fast and a slow window (pure), and the
watcher's fast path driving a rollback with fake fetches (no processes)."""

from __future__ import annotations

import pytest

from router_lib.release_observe import (
    CANDIDATE,
    STABLE,
    ReleaseSample,
    combine,
    observe,
    parse_envoy_release,
    parse_triton_model,
)

M = "digits_classifier"


def envoy_text(stable: float, candidate: float, candidate_5xx: float = 0, slow_bucket: float = 0) -> str:
    lines = ["# TYPE envoy_cluster_upstream_rq_total counter"]
    for name, v in ((f"{M}--cpu--http", stable), (f"{M}--cpu--grpc", 0), (f"{M}--cpu--http--v2", candidate),
                    (f"{M}--cpu--http--v3", 999), ("other--cpu--http", 999)):
        lines.append(f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{name}"}} {v}')
    lines += ["# TYPE envoy_cluster_upstream_rq_xx counter",
              f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",envoy_cluster_name="{M}--cpu--http--v2"}} {candidate_5xx}',
              "# TYPE envoy_cluster_upstream_rq_time histogram"]
    for name, fast in ((f"{M}--cpu--http", stable), (f"{M}--cpu--http--v2", candidate - slow_bucket)):
        total = stable if name.endswith("http") else candidate
        lines.append(f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{name}",le="10"}} {fast}')
        lines.append(f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{name}",le="500"}} {total}')
        lines.append(f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{name}",le="+Inf"}} {total}')
        lines.append(f'envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name="{name}"}} 0')
        lines.append(f'envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{name}"}} {total}')
    return "\n".join(lines) + "\n"


def triton_text(success: float, duration_us: float, version: str = "1", failure: float = 0) -> str:
    return (f'nv_inference_request_success{{model="{M}",version="{version}"}} {success}\n'
            f'nv_inference_request_failure{{model="{M}",reason="BACKEND",version="{version}"}} {failure}\n'
            f'nv_inference_request_duration_us{{model="{M}",version="{version}"}} {duration_us}\n'
            f'nv_inference_request_success{{model="other",version="1"}} 5000\n')


def sample(t: float, stable: float, candidate: float, cand_ms: float, **kw: float) -> ReleaseSample:
    envoy = parse_envoy_release(envoy_text(stable, candidate, **kw), M, "2")
    triton = [("cpu", STABLE, parse_triton_model(triton_text(stable, stable * 2000), M)),
              ("cpu", CANDIDATE, parse_triton_model(triton_text(candidate, candidate * cand_ms * 1000, "2"), M, "2"))]
    return ReleaseSample(t, combine(envoy, triton))


def test_envoy_clusters_are_split_by_version_and_other_versions_and_models_skipped() -> None:
    parsed = parse_envoy_release(envoy_text(100, 20, candidate_5xx=3), M, "2")
    assert set(parsed) == {("cpu", STABLE), ("cpu", CANDIDATE)}
    assert parsed[("cpu", STABLE)].rq_total == 100 and parsed[("cpu", CANDIDATE)].rq_5xx == 3


def test_triton_counts_only_the_model_and_version_asked() -> None:
    assert parse_triton_model(triton_text(10, 5000, "2", failure=2), M, "2") == (12, 2, 5000)
    assert parse_triton_model(triton_text(10, 5000, "2"), M, "1") == (0, 0, 0)


def test_the_fast_window_sees_a_latency_fault_within_half_a_second() -> None:
    samples = [sample(0.0, 0, 0, 2.0), sample(5.0, 100, 100, 2.0), sample(5.5, 110, 110, 2.0)]
    obs = observe(samples, ["cpu"], fast_window_s=0.5, slow_window_s=10)
    assert obs is not None and obs.candidate_requests_total == 110
    cand = obs.pools[0].candidate
    assert cand.requests == 10 and cand.mean_ms == pytest.approx(2.0)
    # the candidate turns slow: 10 requests at 150 ms each in the next half second
    slow = ReleaseSample(6.0, combine(parse_envoy_release(envoy_text(120, 120), M, "2"), [
        ("cpu", STABLE, (120, 0, 120 * 2000)), ("cpu", CANDIDATE, (120, 0, 110 * 2000 + 10 * 150_000))]))
    obs = observe([*samples, slow], ["cpu"], fast_window_s=0.5, slow_window_s=10)
    assert obs is not None and obs.pools[0].candidate.mean_ms == pytest.approx(150.0)
    assert obs.pools[0].stable.mean_ms == pytest.approx(2.0)


def test_quantiles_come_from_the_slow_window_and_errors_from_envoy_or_triton() -> None:
    samples = [sample(0.0, 0, 0, 2.0), sample(10.0, 500, 500, 2.0, slow_bucket=50, candidate_5xx=4)]
    obs = observe(samples, ["cpu"], fast_window_s=0.5, slow_window_s=10)
    assert obs is not None
    cand, stable = obs.pools[0].candidate, obs.pools[0].stable
    assert stable.p99_ms is not None and stable.p99_ms <= 10
    assert cand.p99_ms is not None and cand.p99_ms > 100  # 10% of the candidate's requests took 10-500 ms
    assert cand.errors == 4


def test_one_sample_is_no_observation_and_a_reset_counter_is_not_negative() -> None:
    assert observe([sample(0.0, 10, 10, 2.0)], ["cpu"], fast_window_s=0.5, slow_window_s=10) is None
    obs = observe([sample(0.0, 100, 100, 2.0), sample(1.0, 5, 5, 2.0)], ["cpu"], fast_window_s=0.5, slow_window_s=10)
    assert obs is not None and obs.pools[0].candidate.requests == 5


def test_no_quantiles_until_the_samples_span_the_slow_window() -> None:
    samples = [sample(0.0, 0, 0, 2.0), sample(5.0, 100, 100, 2.0, slow_bucket=10)]
    obs = observe(samples, ["cpu"], fast_window_s=0.5, slow_window_s=10)
    assert obs is not None and obs.pools[0].candidate.p99_ms is None and obs.pools[0].candidate.mean_ms == 2.0


def test_a_quiet_candidate_is_judged_over_its_last_requests_not_an_empty_half_second() -> None:
    samples = [sample(t, 10 * t, 2 * t, 2.0) for t in range(0, 8)]  # 2 candidate requests a second
    short = observe(samples, ["cpu"], fast_window_s=0.5, slow_window_s=10)
    judged = observe(samples, ["cpu"], fast_window_s=0.5, slow_window_s=10, min_requests=10)
    assert short is not None and judged is not None
    assert short.pools[0].candidate.requests == 2  # the newest sample's second only
    assert judged.pools[0].candidate.requests == 10  # five seconds back: enough to judge


def test_a_quantile_needs_enough_requests_beyond_it_and_reaches_back_for_them() -> None:
    from router_lib.release_observe import quantile_min_requests

    assert (quantile_min_requests(0.95), quantile_min_requests(0.99)) == (100, 500)
    # 60 requests a second per version, one in ten slow; a 2 s window holds 120
    samples = [sample(t / 2, 30 * t, 30 * t, 2.0, slow_bucket=3 * t) for t in range(0, 19)]
    obs = observe(samples[:5], ["cpu"], fast_window_s=0.5, slow_window_s=2)
    assert obs is not None
    cand = obs.pools[0].candidate
    assert cand.p95_ms is not None and cand.p95_ms > 10  # 120 requests: p95 is judged (6 beyond it)
    assert cand.p99_ms is None  # ... p99 is not: the slowest request alone would be "p99"
    obs = observe(samples, ["cpu"], fast_window_s=0.5, slow_window_s=2)  # 9 s kept: 540 requests
    assert obs is not None and obs.pools[0].candidate.p99_ms is not None and obs.pools[0].candidate.p99_ms > 10
