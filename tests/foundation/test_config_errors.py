"""Broken fleet, profile and model files get errors that name the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from model_repository.definitions import load_models
from router_lib.calibration import CalibrationSettings
from router_lib.config import ConfigError, load_fleet, load_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fleet_dir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    shutil.copy(ROOT / "fleet.yaml", tmp_path / "fleet.yaml")
    return tmp_path


def edit_yaml(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def test_the_shipped_fleet_loads():
    fleet = load_fleet(ROOT / "fleet.yaml", tuple(load_models()))
    assert [p.name for p in fleet.pools] == ["cpu", "gpu", "inf2"]
    assert fleet.pool("inf2").models == ("text_embedding",)  # no Neuron build of a tree ensemble


def test_share_tiers_is_off_unless_a_pool_asks(fleet_dir):
    edit_yaml(fleet_dir / "fleet.yaml", lambda d: d["pools"][2].update(share_tiers=True))
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    assert [p.share_tiers for p in fleet.pools] == [False, False, True]


FLEET_CASES = [
    ("replicas-zero", lambda d: d["pools"][1].update(replicas=0), "pools[1].replicas", "integer >= 1"),
    ("replicas-string", lambda d: d["pools"][0].update(replicas="two"), "pools[0].replicas", "integer"),
    ("unknown-accelerator", lambda d: d["pools"][0].update(accelerator="tpu"), "pools[0].accelerator", "one of"),
    ("unpriced-instance", lambda d: d["pools"][2].update(instance_type="inf9.huge"), "pools[2].instance_type", "no price"),
    ("bad-mode", lambda d: d["pools"][0].update(mode="virtual"), "pools[0].mode", "one of"),
    ("synthetic-real-pool", lambda d: d["pools"][0].update(outputs="synthetic"), "pools[0].outputs", "only for emulated"),
    ("duplicate-name", lambda d: d["pools"][1].update(name="cpu"), "pools[1].name", "duplicate"),
    ("missing-name", lambda d: d["pools"][0].pop("name"), "pools[0].name", "required"),
    ("typo-field", lambda d: d["pools"][0].update(replica=2), "pools[0].replica", "unknown field"),
    ("model-without-profile", lambda d: d["pools"][2].update(models=["digits_classifier"]), "pools[2].models[0]", "no inferentia profile"),
    ("no-pools", lambda d: d.update(pools=[]), "pools", "at least one"),
    ("pools-not-list", lambda d: d.update(pools={"cpu": 1}), "pools", "must be a list"),
    ("replicas-below-min", lambda d: d["pools"][1].update(replicas=1, min_replicas=2, max_replicas=4),
     "pools[1].replicas", "must be >= min_replicas 2"),
    ("replicas-above-max", lambda d: d["pools"][1].update(replicas=3, max_replicas=2), "pools[1].replicas",
     "must be <= max_replicas 2"),
    ("min-negative", lambda d: d["pools"][1].update(min_replicas=-1), "pools[1].min_replicas", "integer >= 0"),
    ("zero-replicas-without-min-zero", lambda d: d["pools"][1].update(replicas=0, max_replicas=3),
     "pools[1].replicas", "integer >= 1"),
    ("machine-limit-below-mins", lambda d: d.update(max_local_replicas=2), "max_local_replicas",
     "below the pools' min_replicas together (3)"),
    ("budget-not-positive", lambda d: d.update(budget_per_hour_usd=0), "budget_per_hour_usd", "number > 0"),
    ("dilation-with-a-real-pool", lambda d: d.update(time_dilation=10), "time_dilation", "only a fleet of emulated"),
    ("dilation-below-one", lambda d: d.update(time_dilation=0.5), "time_dilation", "number >= 1.0"),
    ("autoscaling-unknown-knob", lambda d: d.update(autoscaling={"cooldown": 5}), "autoscaling.cooldown",
     "unknown field"),
    ("autoscaling-not-a-number", lambda d: d.update(autoscaling={"headroom": "lots"}), "autoscaling.headroom",
     "must be a number"),
    ("routing-unknown-knob", lambda d: d.update(routing={"isolation": False}), "routing.isolation", "unknown field"),
    ("routing-flag-not-bool", lambda d: d.update(routing={"tier_isolation": "no"}), "routing.tier_isolation",
     "must be true or false"),
    ("routing-headroom-out-of-range", lambda d: d.update(routing={"headroom": 2}), "routing.headroom",
     "headroom must be"),
    ("calibration-unknown-knob", lambda d: d.update(calibration={"trust": 1}), "calibration.trust", "unknown field"),
    ("calibration-flag-not-bool", lambda d: d.update(calibration={"use_for_decisions": 1}),
     "calibration.use_for_decisions", "must be true or false"),
    ("calibration-error-out-of-range", lambda d: d.update(calibration={"max_relative_error": 1.5}),
     "calibration.max_relative_error", "must be in (0, 1)"),
    ("share-tiers-not-bool", lambda d: d["pools"][2].update(share_tiers="yes"), "pools[2].share_tiers",
     "must be true or false"),
    ("autoscaling-headroom-below-one", lambda d: d.update(autoscaling={"headroom": 0.5}), "autoscaling.headroom",
     "must be >= 1"),
]


def test_a_dilated_fleet_slows_service_times_cold_starts_and_bounds_alike(fleet_dir):
    def all_emulated(d):  # type: ignore[no-untyped-def]
        d["pools"][0].update(mode="emulated")
        d.update(time_dilation=10)

    plain = load_fleet(fleet_dir / "fleet.yaml")
    edit_yaml(fleet_dir / "fleet.yaml", all_emulated)
    slow = load_fleet(fleet_dir / "fleet.yaml")
    key = next(iter(plain.profiles))
    assert slow.profiles[key].latency_ms(1) == pytest.approx(10 * plain.profiles[key].latency_ms(1))
    assert slow.tiers.get("gold").p99_ms == 10 * plain.tiers.get("gold").p99_ms
    assert slow.tiers.get("bronze").p99_ms is None and slow.time_dilation == 10


def test_an_autoscaled_pool_may_start_at_zero_and_says_its_bounds(fleet_dir):
    edit_yaml(fleet_dir / "fleet.yaml", lambda d: (d["pools"][1].update(replicas=0, min_replicas=0, max_replicas=4),
                                                   d.update(max_local_replicas=12, budget_per_hour_usd=5.0)))
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    gpu = fleet.pools[1]
    assert (gpu.replicas, gpu.replica_bounds, gpu.autoscaled) == (0, (0, 4), True)
    assert not fleet.pools[0].autoscaled and fleet.pools[0].replica_bounds == (1, 1)
    assert (fleet.max_local_replicas, fleet.budget_per_hour_usd) == (12, 5.0)


def test_the_fleet_file_sets_the_online_calibration(fleet_dir):
    edit_yaml(fleet_dir / "fleet.yaml", lambda d: d.update(calibration={"min_executions": 200,
                                                                        "use_for_decisions": False}))
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    settings = CalibrationSettings(**fleet.calibration)
    assert (settings.min_executions, settings.use_for_decisions) == (200, False)
    assert settings.max_relative_error == CalibrationSettings().max_relative_error  # the rest: defaults


@pytest.mark.parametrize(("change", "field", "message"), [c[1:] for c in FLEET_CASES], ids=[c[0] for c in FLEET_CASES])
def test_broken_fleet_file_names_file_and_field(fleet_dir, change, field, message):
    edit_yaml(fleet_dir / "fleet.yaml", change)
    with pytest.raises(ConfigError) as err:
        load_fleet(fleet_dir / "fleet.yaml")
    assert err.value.path.endswith("fleet.yaml")
    assert err.value.field == field
    assert message in str(err.value)


PROFILE_CASES = [
    ("negative-latency", lambda d: d["latency_ms_by_batch"].update({1: -3}), "latency_ms_by_batch.1", "> 0"),
    ("batch-zero", lambda d: d["latency_ms_by_batch"].update({0: 1.0}), "latency_ms_by_batch.0", ">= 1"),
    ("batch-over-max", lambda d: d.update(max_batch_size=8), "latency_ms_by_batch", "above max_batch_size"),
    ("bad-provenance", lambda d: d["provenance"].update(kind="guessed"), "provenance.kind", "'measured' or 'reference'"),
    ("reference-without-source", lambda d: d["provenance"].pop("source"), "provenance.source", "required"),
    ("instances-zero", lambda d: d.update(instances_per_replica=0), "instances_per_replica", ">= 1"),
    ("tail-below-one", lambda d: d.update(p99_over_p50=0.5), "p99_over_p50", ">= 1"),
    ("empty-table", lambda d: d.update(latency_ms_by_batch={}), "latency_ms_by_batch", "at least one"),
    ("cold-start-negative", lambda d: d.update(cold_start_s=-5), "cold_start_s", "number >= 0.0"),
]


@pytest.mark.parametrize(("change", "field", "message"), [c[1:] for c in PROFILE_CASES], ids=[c[0] for c in PROFILE_CASES])
def test_broken_profile_names_file_and_field(fleet_dir, change, field, message):
    path = fleet_dir / "profiles" / "text_embedding.inferentia.yaml"
    edit_yaml(path, change)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert err.value.path == str(path)
    assert err.value.field == field
    assert message in str(err.value)


def test_broken_profile_stops_the_fleet_from_loading(fleet_dir):
    edit_yaml(fleet_dir / "profiles" / "text_embedding.gpu.yaml", lambda d: d.update(accelerator="fpga"))
    with pytest.raises(ConfigError, match=r"text_embedding.gpu.yaml: accelerator: must be one of"):
        load_fleet(fleet_dir / "fleet.yaml")


def test_duplicate_profile_is_rejected(fleet_dir):
    shutil.copy(fleet_dir / "profiles" / "text_embedding.gpu.yaml", fleet_dir / "profiles" / "copy.yaml")
    with pytest.raises(ConfigError, match="duplicate profile for text_embedding on gpu"):
        load_fleet(fleet_dir / "fleet.yaml")


def test_invalid_yaml_reports_line(fleet_dir):
    (fleet_dir / "fleet.yaml").write_text("pools:\n  - name: cpu\n    replicas: [1,\n")
    with pytest.raises(ConfigError, match=r"fleet.yaml: line \d+, column \d+: not valid YAML"):
        load_fleet(fleet_dir / "fleet.yaml")


def test_missing_prices_file_is_named(fleet_dir):
    (fleet_dir / "data" / "prices.yaml").unlink()
    with pytest.raises(ConfigError, match=r"prices.yaml: file not found"):
        load_fleet(fleet_dir / "fleet.yaml")


MODEL_CASES = [
    ("bad-dtype", lambda d: d["models"]["digits_classifier"]["inputs"][0].update(data_type="TYPE_FLOAT"),
     "models.digits_classifier.inputs[0].data_type", "must be one of"),
    ("zero-dim", lambda d: d["models"]["digits_classifier"]["inputs"][0].update(dims=[0]),
     "models.digits_classifier.inputs[0].dims", "positive integers or -1"),
    ("bad-kind", lambda d: d["models"]["text_embedding"].update(kind="pipeline"), "models.text_embedding.kind", "one of"),
    ("buckets-unsorted", lambda d: d["models"]["text_embedding"]["tokenizer"].update(pad_buckets=[64, 16, 256]),
     "models.text_embedding.tokenizer.pad_buckets", "ascending"),
    ("batch-zero", lambda d: d["models"]["digits_classifier"].update(max_batch_size=0),
     "models.digits_classifier.max_batch_size", ">= 1"),
    ("tokenizer-on-single", lambda d: d["models"]["digits_classifier"].update(tokenizer={"name": "x"}),
     "models.digits_classifier.tokenizer", "only an ensemble"),
]


@pytest.mark.parametrize(("change", "field", "message"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_broken_model_definition_names_file_and_field(tmp_path, change, field, message):
    path = tmp_path / "models.yaml"
    shutil.copy(ROOT / "model_repository" / "models.yaml", path)
    edit_yaml(path, change)
    with pytest.raises(ConfigError) as err:
        load_models(path)
    assert err.value.field == field
    assert message in str(err.value)


def test_profile_naming_an_unknown_model_is_rejected(fleet_dir):
    edit_yaml(fleet_dir / "profiles" / "text_embedding.gpu.yaml", lambda d: d.update(model="bert_large"))
    with pytest.raises(ConfigError, match="profile for unknown model 'bert_large'"):
        load_fleet(fleet_dir / "fleet.yaml", tuple(load_models()))


def test_a_real_gpu_pool_loads_but_is_refused_on_this_machine(fleet_dir, tmp_path):
    """The loader accepts a production fleet with real accelerators; the local supervisor refuses it."""
    from fleet.supervisor import FleetSupervisor

    edit_yaml(fleet_dir / "fleet.yaml", lambda d: d["pools"][1].update(mode="real"))
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    assert not fleet.pool("gpu").emulated
    with pytest.raises(ConfigError) as err:
        FleetSupervisor(fleet, load_models(), tmp_path, tmp_path, source=str(fleet_dir / "fleet.yaml"))
    assert err.value.field == "pools[1].mode" and "cannot run on this machine" in str(err.value)
