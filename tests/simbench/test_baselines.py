"""Planner-sized single-kind fleets of the platform benchmark (``benchmarks/platform/baselines.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.platform.baselines import fleet_pools_disclosure, single_kind_fleet_raw, write_single_kind_fleet
from benchmarks.platform.load_bench import read_procs_running
from router_lib.domain import Accelerator
from router_lib.planner import Plan, PlannedPool

ROOT = Path(__file__).resolve().parents[2]
RAW = {"prices": "data/prices.yaml", "tiers": "data/tiers.yaml", "profiles": "profiles", "pools": [
    {"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1, "mode": "real"},
    {"name": "inf2", "accelerator": "inferentia", "instance_type": "inf2.xlarge", "replicas": 1, "mode": "emulated",
     "outputs": "synthetic"}]}


def planned(name: str, acc: Accelerator, itype: str, replicas: int, models: tuple[str, ...]) -> PlannedPool:
    return PlannedPool(name, acc, itype, "gold", replicas, 1.0, models)


INF2_PLAN = Plan(True, "optimal", (
    planned("inferentia-gold", Accelerator.INFERENTIA, "inf2.xlarge", 2, ("text_embedding",)),
    planned("inferentia-host-gold", Accelerator.CPU, "inf2.xlarge", 1, ("digits_classifier",))), 2.274)


def test_an_inferentia_fleet_serves_the_classifier_on_its_host_cpus_as_a_real_pool_at_the_inf2_price() -> None:
    raw = single_kind_fleet_raw(RAW, Accelerator.INFERENTIA, INF2_PLAN)
    assert raw["pools"] == [
        {**RAW["pools"][1], "replicas": 2},
        {"name": "inf2-host", "accelerator": "cpu", "instance_type": "inf2.xlarge", "replicas": 1, "mode": "real",
         "models": ["digits_classifier"]}]


def test_a_kind_split_into_tier_classes_by_the_planner_is_one_local_pool_with_all_its_replicas() -> None:
    plan = Plan(True, "optimal", (planned("cpu-gold", Accelerator.CPU, "c7g.xlarge", 1, ("m",)),
                                  planned("cpu-bronze", Accelerator.CPU, "c7g.xlarge", 2, ("m",))), 0.435)
    assert single_kind_fleet_raw(RAW, Accelerator.CPU, plan)["pools"] == [{**RAW["pools"][0], "replicas": 3}]


def test_an_infeasible_plan_or_a_missing_template_pool_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="no feasible single-kind plan for gpu: no profile"):
        single_kind_fleet_raw(RAW, Accelerator.GPU, Plan(False, "no profile"))
    with pytest.raises(ValueError, match="no pool of accelerator 'gpu'"):
        single_kind_fleet_raw(RAW, Accelerator.GPU, INF2_PLAN)


def test_the_written_fleet_loads_and_says_which_pools_answer_for_real(tmp_path: Path) -> None:
    from model_repository.definitions import load_models
    from router_lib.config import load_fleet

    path = write_single_kind_fleet(ROOT / "fleet.demo.yaml", Accelerator.INFERENTIA, INF2_PLAN, tmp_path / "f.yaml")
    assert yaml.safe_load(path.read_text())["prices"].startswith("/")
    disclosed = {p["pool"]: p for p in fleet_pools_disclosure(load_fleet(path, tuple(load_models())))}
    assert disclosed["inf2"]["outputs"] == "synthetic" and disclosed["inf2"]["replicas"] == 2
    assert disclosed["inf2-host"]["outputs"] == "real" and disclosed["inf2-host"]["price_per_hour_usd"] == 0.758


def test_procs_running_is_read_from_proc_stat_text() -> None:
    assert read_procs_running("cpu  1 2 3\nprocs_running 7\nprocs_blocked 0\n") == 7
    with pytest.raises(ValueError, match="procs_running"):
        read_procs_running("cpu 1 2 3\n")


def test_the_benchmark_reports_how_users_started_how_in_step_they_sent_and_the_warm_up() -> None:
    from benchmarks.platform.load_bench import pacings, start_phase_sentence, start_phases, waves_by_run
    from locustfiles.records import RequestRecord
    from locustfiles.settings import START_PHASE_NOTES
    from reporting.run_data import RunData

    def run(times: list[float], notes: tuple[str, ...]) -> RunData:
        recs = tuple(RequestRecord(100.0 + t, "gold", "m", "grpc", "cpu", False, 1.0, True, 1, "") for t in times)
        return RunData(label="r", shape="burst", started_unix_s=100.0, ended_unix_s=110.0, pools=(), tiers=(),
                       records=recs, samples=(), notes=notes)

    spread = run([0.0, 0.1, 0.2, 0.3], (START_PHASE_NOTES["spread"],))
    old = run([0.0, 0.001, 0.002, 0.5], ())  # recorded before the setting: no note, users started together
    assert start_phases([spread]) == "spread"
    assert start_phases([spread, old]) == "spread+together"
    waves = waves_by_run({("router", "burst", "validation", 1): spread, ("router", "burst", "validation", 2): old})
    assert waves == {"router / burst (validation)": [1, 3]}
    text = start_phase_sentence({"settings": {"start_phase": "spread", "pacing": "random", "warm_up_s": 20.0},
                                 "largest_wave_10ms": waves})
    assert "20 s of unrecorded steady load" in text and "router / burst (validation) 1-3" in text
    assert "pace `random` (users pace at random" in text
    assert pacings([spread, old]) == "fixed"
    assert "not warmed up" in start_phase_sentence({"settings": {"start_phase": "together"}})
