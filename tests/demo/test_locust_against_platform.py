"""A short, bounded locust run against the real local platform: per-tier stats with the pool."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from local_platform.platform import LocalPlatform, PlatformPorts
from reporting.analysis import build_report
from reporting.recorder import record_run

pytestmark = pytest.mark.integration


def test_short_locust_run_records_every_tier_with_its_serving_pool(artifacts: Path, tmp_path: Path) -> None:
    platform = LocalPlatform(workdir=tmp_path / "platform", artifacts=artifacts, ports=PlatformPorts(http=0, grpc=0))
    platform.start()
    try:
        run = record_run(platform, tmp_path / "run", label="test", shape="steady", duration_s=8.0, base_users=6,
                         simulate=False)
    finally:
        platform.stop()
    pools = {p.name for p in run.pools}
    assert run.records, "locust recorded no requests"
    ok = [r for r in run.records if r.ok]
    assert len(ok) >= 0.9 * len(run.records), [r.error for r in run.records if not r.ok][:5]
    assert {r.pool for r in ok} <= pools and all(r.pool for r in ok)
    assert all(r.emulated == run.pool(r.pool).emulated for r in ok)  # type: ignore[union-attr]
    assert {(r.tier, r.model) for r in run.records} == {(t, m) for t in ("gold", "silver", "bronze")
                                                       for m in ("text_embedding", "digits_classifier")}
    assert {r.protocol for r in run.records} == {"grpc", "http"}
    report = build_report(run)
    assert [t.tier for t in report.tiers] == ["gold", "silver", "bronze"]
    assert all(t.requests > 0 and t.p99_ms > 0 for t in report.tiers)
    assert run.samples and run.samples[0].weights, "the control plane was not sampled"
    # Users start spread over their own periods and pace at random (locustfiles/settings.py), so the
    # 6 users do not all send within the same 10 ms, as users that start together and keep the same
    # pace do (6 of 6 when measured; at random, 5 or more within 10 ms is a ~0.4% event here).
    from locustfiles.settings import PACING_NOTES, START_PHASE_NOTES
    from reporting.analysis import largest_wave

    wave = largest_wave([r.t_unix_s for r in run.records])
    assert START_PHASE_NOTES["spread"] in run.notes and PACING_NOTES["random"] in run.notes
    assert wave <= 4
    # locust's own stats are split by tier, model and serving pool too.
    with open(tmp_path / "run" / "locust_stats.csv") as f:
        names = {row["Name"] for row in csv.DictReader(f) if row["Name"] != "Aggregated"}
    assert names and all(n.count("/") == 2 and n.split("/")[2] in pools for n in names)
    # Triton's statistics were read before and after: the simulator's service time per batch size.
    import json

    from benchmarks.platform.sim_validation import batch_calibrated_fleet
    from model_repository.definitions import load_models

    doc = json.loads((tmp_path / "run" / "triton_stats.json").read_text())
    assert set(doc["after"]) == pools
    ensembles = {n: d.composing_models for n, d in load_models().items() if d.composing_models}
    _fleet, used = batch_calibrated_fleet(platform.fleet, [doc], ensembles, min_executions=1)
    assert {(u.pool, u.model) for u in used} == {(r.pool, r.model) for r in ok}
    assert all(u.measured_ms > 0 and u.executions >= 1 for u in used)
