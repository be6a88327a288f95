"""Workload files and trace generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router_lib.config import ConfigError, load_fleet
from router_lib.workload import Stream, Workload, arrivals, load_workload, make_trace

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stream", [
    Stream("m", "gold", 200.0),
    Stream("m", "gold", 200.0, "diurnal", amplitude=0.5, period_s=100.0),
    Stream("m", "gold", 100.0, "bursty", burst_factor=4.0, burst_on_s=5.0, burst_off_s=20.0),
], ids=["poisson", "diurnal", "bursty"])
def test_generated_rates_match_the_stream_mean(stream: Stream) -> None:
    t = arrivals(stream, 2000.0, np.random.default_rng(1))
    assert t.size / 2000.0 == pytest.approx(stream.mean_rate_per_s, rel=0.05)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 2000.0


def test_bursty_traffic_is_burstier_than_poisson() -> None:
    rng = np.random.default_rng(2)
    def per_second_cv(s: Stream) -> float:
        counts = np.bincount(arrivals(s, 600.0, rng).astype(int), minlength=600)
        return float(counts.std() / counts.mean())
    assert per_second_cv(Stream("m", "gold", 100.0, "bursty")) > 2 * per_second_cv(Stream("m", "gold", 100.0))


def test_peak_and_mean_demand() -> None:
    wl = Workload("w", "", 10.0, 0, (Stream("a", "gold", 100.0), Stream("a", "gold", 50.0, "diurnal", amplitude=0.2),
                                     Stream("b", "bronze", 10.0, "bursty", burst_factor=3.0)))
    assert wl.peak_demand() == {("a", "gold"): pytest.approx(160.0), ("b", "bronze"): pytest.approx(30.0)}
    assert wl.scaled(2.0).peak_demand()[("a", "gold")] == pytest.approx(320.0)


def test_trace_is_sorted_and_seeded() -> None:
    wl = Workload("w", "", 30.0, 9, (Stream("a", "gold", 100.0), Stream("b", "bronze", 50.0, "bursty")))
    a, b = make_trace(wl), make_trace(wl)
    assert np.array_equal(a.times_s, b.times_s) and np.all(np.diff(a.times_s) >= 0)
    assert set(a.models) == {"a", "b"} and len(a) == a.model_index.size == a.tier_index.size


def test_every_workload_file_in_the_repo_loads() -> None:
    fleet = load_fleet(ROOT / "fleet.yaml")
    files = sorted((ROOT / "data" / "workloads").glob("*.yaml"))
    assert any(f.name == "reference.yaml" for f in files)
    for f in files:
        wl = load_workload(f, fleet.tiers.tiers)
        assert {s.model for s in wl.streams} <= set(fleet.models), f


@pytest.mark.parametrize(("body", "field"), [
    ("name: x\nduration_s: 10\nstreams: []\n", "streams"),
    ("name: x\nduration_s: 10\nstreams: [{model: m, tier: platinum, rate_per_s: 1}]\n", "streams[0].tier"),
    ("name: x\nduration_s: 10\nstreams: [{model: m, tier: gold, rate_per_s: 1, pattern: spiky}]\n", "streams[0].pattern"),
    ("name: x\nduration_s: 10\nstreams: [{model: m, tier: gold, rate_per_s: -1}]\n", "streams[0].rate_per_s"),
    ("name: x\nduration_s: 10\nstreams: [{model: m, tier: gold, rate_per_s: 1, rate: 2}]\n", "streams[0].rate"),
], ids=["no-streams", "unknown-tier", "unknown-pattern", "negative-rate", "unknown-field"])
def test_workload_errors_name_the_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_workload(path, {"gold": None, "silver": None, "bronze": None})
    assert str(path) in str(err.value) and err.value.field == field
