"""The release spec: what a valid file builds, and the precise error each mistake gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_lib.release_spec import ReleaseSpecError, load_release_spec, parse_release_spec

VALID = {
    "name": "minilm-v2", "model": "text_embedding",
    "stable": {"version": 1}, "candidate": {"version": "2", "pools": ["cpu"]},
    "steps": [1, 5, 25, 50, 100], "step": {"min_time_s": 10, "min_requests": 50},
    "thresholds": {"p95_regression_pct": 20, "max_error_rate": 0.02, "min_agreement": 0.99},
}


def with_(**changes: object) -> dict:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in VALID.items()}
    for path, value in changes.items():
        parts = path.split("__")
        target = data
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        if value is ...:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return data


def test_a_valid_spec_builds_with_defaults_filled_in() -> None:
    spec = parse_release_spec(VALID)
    assert (spec.stable_version, spec.candidate_version) == ("1", "2")
    assert spec.steps_bp == (100, 500, 2500, 5000, 10000)
    assert spec.tiers == ("bronze", "silver", "gold")
    assert spec.thresholds.p99_regression_pct == 30.0  # default kept
    assert spec.candidate_pools == ("cpu",)
    assert parse_release_spec(spec.to_json()) == spec  # round trip (the persisted form)


def test_fleet_tiers_are_ordered_least_demanding_first() -> None:
    spec = parse_release_spec(with_(tiers=...), known_tiers=("gold", "silver", "bronze"))
    assert spec.tiers == ("bronze", "silver", "gold")


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": ...}, "name: required"),
    ({"model": "a--b"}, "model: required"),
    ({"stable": ...}, "stable: required"),
    ({"candidate__version": 0}, "candidate.version: required, a Triton model version"),
    ({"candidate__version": "1"}, "candidate.version: must differ from the stable version (1)"),
    ({"steps": []}, "steps: must be a non-empty list"),
    ({"steps": [5, 1, 100]}, "steps[1]: must be greater than the step before (5), got 1"),
    ({"steps": [1, 50]}, "steps: must end at 100"),
    ({"steps": [0.001, 100]}, "steps[0]: at most two decimals"),
    ({"steps": [1, 150]}, "steps[1]: must be a percentage in (0, 100], got 150"),
    ({"thresholds__max_error_rate": 2}, "thresholds.max_error_rate: must be a number between 0 and 1, got 2"),
    ({"thresholds__p95_regression_pct": "x"}, "thresholds.p95_regression_pct: must be a number >= 0 or null"),
    ({"thresholds__p59": 1}, "thresholds: unknown field(s) ['p59']"),
    ({"step__min_requests": -1}, "step.min_requests: must be an integer >= 0, got -1"),
    ({"tiers": ["gold", "gold"]}, "tiers: lists a name twice"),
    ({"shadow__mirror_percent": 101}, "shadow.mirror_percent: must be a number between 0 and 100"),
    ({"colour": "red"}, "(top level): unknown field(s) ['colour']"),
], ids=lambda v: str(v)[:40])
def test_each_mistake_is_named_precisely(changes: dict, message: str) -> None:
    with pytest.raises(ReleaseSpecError) as e:
        parse_release_spec(with_(**changes), "release.yaml")
    assert str(e.value).startswith("release.yaml: ")
    assert message in str(e.value)


def test_tiers_must_match_the_fleets() -> None:
    with pytest.raises(ReleaseSpecError, match=r"tiers: must list every tier of the fleet"):
        parse_release_spec(with_(tiers=["bronze", "gold"]), known_tiers=("gold", "silver", "bronze"))


def test_a_file_that_is_not_yaml_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ReleaseSpecError, match="not valid YAML"):
        load_release_spec(bad)
    with pytest.raises(ReleaseSpecError, match="cannot read"):
        load_release_spec(tmp_path / "missing.yaml")


def test_a_first_step_of_zero_is_a_shadow_step_and_needs_mirroring() -> None:
    with pytest.raises(ReleaseSpecError, match=r"steps\[0\]: 0 \(a shadow step\) needs shadow.mirror_percent > 0"):
        parse_release_spec(with_(steps=[0, 50, 100]))
    spec = parse_release_spec(with_(steps=[0, 50, 100], shadow={"mirror_percent": 100}))
    assert spec.steps_bp == (0, 5000, 10000)
