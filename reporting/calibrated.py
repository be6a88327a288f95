"""The simulator with this machine's measured service times and the run's recorded weights.

The plain simulation (``cost.simulate_recorded_load``) answers "what would the fleet do if every
pool ran at its accelerator profile": on this machine the emulated pools lag their profiles and
the CPU is shared, so it cannot match the measurement, and the gap says nothing about whether the
simulator's queueing is right.  This replay removes both differences and tests only the queueing:

- service time per (pool, model): the mean time per execution measured by Triton during the run
  (``nv_inference_compute_infer_duration_us`` / ``nv_inference_request_success``: Triton charges
  each request its execution's time; summed over an ensemble's steps), at the mean batch size
  measured (``nv_inference_count`` / ``exec_count``);
- routing: the weights the control plane actually published, sampled each second (a replay
  ``decide_fn``), instead of the policy re-deciding on different inputs.

What it still leaves out, and so what a remaining gap means: Envoy and the client's own time,
and CPU contention between pools (all pools here share two cores).  The calibration is crude: one
measured point per (pool, model), which the profile extrapolates in proportion to batch size
(pessimistic when the real batcher forms bigger batches under load), and an ensemble's steps are
summed as if they could not overlap (they can: each step has its own instances).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from reporting.run_data import RunData, recorded_trace


def model_steps(counters: Mapping[str, Any], model: str) -> list[str]:
    """The Triton models whose counters make up public ``model``: an ensemble's composing models
    (named ``model_*``), else ``model`` itself (empty if it never ran)."""
    return [m for m in counters if m.startswith(model + "_")] or ([model] if model in counters else [])


def measured_service_ms(triton: Mapping[str, Mapping[str, Mapping[str, float]]], pool: str, model: str
                        ) -> tuple[float, float] | None:
    """(mean batch, mean ms per execution) of public ``model`` on ``pool``; None if it never ran.

    Triton adds ``nv_inference_compute_infer_duration_us`` once per *request* (each request of a
    batch is charged its execution's whole time, verified on tritonserver 2.51 against the
    statistics extension's ``batch_stats``), so the time of one execution is that sum over the
    successful requests (``nv_inference_request_success``), a mean weighted by requests; divided
    by executions it would be inflated by the requests per execution (2.2x for an emulated GPU's
    text embedding under the platform benchmark's stairs load).  An ensemble (``model`` with
    composing models named ``model_*``) is the sum of its steps' times per execution; its batch is
    the largest step's mean batch (``nv_inference_count`` / ``nv_inference_exec_count``)."""
    counters = triton.get(pool, {})
    steps = model_steps(counters, model)
    total_ms, batch = 0.0, 1.0
    for step in steps:
        c = counters[step]
        execs = c.get("nv_inference_exec_count", 0.0)
        requests = c.get("nv_inference_request_success", 0.0)
        if execs <= 0 or requests <= 0:
            return None
        total_ms += c.get("nv_inference_compute_infer_duration_us", 0.0) / requests / 1000.0
        batch = max(batch, c.get("nv_inference_count", 0.0) / execs)
    return (batch, total_ms) if steps and total_ms > 0 else None


def calibrated_fleet(fleet: Any, run: RunData) -> tuple[Any, dict[str, dict[str, Any]]]:
    """``fleet`` with each measured (pool, model)'s profile replaced by its measured service time.

    A profile is per (model, accelerator); every pool here has its own accelerator, so replacing
    per pool's accelerator is exact for the local fleet."""
    profiles = dict(fleet.profiles)
    used: dict[str, dict[str, Any]] = {}
    for pool in fleet.pools:
        for model in pool.models:
            key = (model, pool.accelerator)
            measured = measured_service_ms(run.triton, pool.name, model)
            if key not in profiles or measured is None:
                continue
            batch, ms = measured
            b = max(1, round(batch))
            profiles[key] = replace(profiles[key], latency_ms_by_batch={b: ms})
            used.setdefault(pool.name, {})[model] = {"mean_batch": round(batch, 2), "ms_per_execution": round(ms, 3),
                                                    "profile_ms_at_batch": round(fleet.profiles[key].latency_ms(b), 3)}
    return replace(fleet, profiles=profiles), used


def replay_decide(run: RunData) -> Any:
    """A ``decide_fn`` for the simulator that returns the weights published at that time."""
    from router_lib.policy_types import RoutingDecision
    from router_lib.routes import Reason, ReasonKind, RouteKey, RouteWeights

    recorded = Reason(ReasonKind.RESUMED, "recorded")

    times = [s.t_unix_s - run.started_unix_s for s in run.samples]

    def decide(inputs: Any, state: Any, now_s: float) -> tuple[Any, Any]:
        i = max(0, bisect.bisect_right(times, now_s) - 1)
        sample = run.samples[i]
        routes = {RouteKey(*key): RouteWeights.of(key[0], key[1], sorted(ws.items()), dict.fromkeys(ws, recorded))
                  for key, ws in sample.weights.items() if sum(ws.values()) > 0}
        return RoutingDecision(routes, {}, now_s), state

    return decide


def simulate_calibrated(run: RunData, fleet: Any, seed: int = 1) -> dict[str, Any]:
    """Replay the run's arrivals with measured service times and recorded weights."""
    from router_lib.simulator import SimSettings, simulate

    if not run.samples or not run.triton:
        return {}
    calibrated, used = calibrated_fleet(fleet, run)
    result = simulate(calibrated, recorded_trace(run), SimSettings(seed=seed), decide_fn=replay_decide(run))
    by_tier = {tier: {"p50_ms": round(s.p50_ms, 3), "p95_ms": round(s.p95_ms, 3), "p99_ms": round(s.p99_ms, 3),
                      "compliance": None if s.compliance is None else round(s.compliance, 6), "items": s.count}
               for tier, s in result.by_tier.items()}
    return {"by_tier": by_tier, "seed": seed, "service_times": used, "unroutable": result.unroutable_requests}
