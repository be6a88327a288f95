"""Loaders for the fleet, profile, price and tier files.

This is the boundary: every file a user edits is parsed and checked here, once, and each error
names the file and the field (``fleet.yaml: pools[1].replicas: must be an integer >= 1, got 0``).
Past this module the values are trusted dataclasses from ``router_lib.domain``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from router_lib.domain import (
    Accelerator,
    EmulatedOutputs,
    Fleet,
    PoolMode,
    PoolSpec,
    Prices,
    Profile,
    Provenance,
    Tier,
    TierSet,
    dilate,
)

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file is wrong.  ``str()`` names the file and the field."""

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        self.path = str(path)
        self.field = field
        super().__init__(f"{path}: {field}: {message}" if field else f"{path}: {message}")


class _Reader:
    """Typed access to one parsed YAML mapping, with errors that carry file and field path."""

    def __init__(self, path: Path, data: Any, where: builtins.str = "") -> None:
        self.path = path
        self.where = where
        if not isinstance(data, dict):
            raise ConfigError(path, where or "(top level)", f"must be a mapping, got {type(data).__name__}")
        self.data: dict[builtins.str, Any] = data

    def _field(self, key: builtins.str) -> builtins.str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: builtins.str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: builtins.str, default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise ConfigError(self.path, self._field(key), "is required")
            return default
        return self.data[key]

    def str(self, key: builtins.str, default: Any = ...) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or str(v).strip() == "":
            raise ConfigError(self.path, self._field(key), f"must be a non-empty string, got {v!r}")
        return str(v)

    def int(self, key: builtins.str, minimum: builtins.int | None = None, default: Any = ...) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        if not isinstance(v, int) or isinstance(v, bool) or (minimum is not None and v < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            raise ConfigError(self.path, self._field(key), f"must be an integer{bound}, got {v!r}")
        return v

    def float(self, key: builtins.str, minimum: builtins.float | None = None, default: Any = ..., positive: bool = False) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if ok and positive and v <= 0:
            ok = False
        if ok and minimum is not None and v < minimum:
            ok = False
        if not ok:
            bound = " > 0" if positive else (f" >= {minimum}" if minimum is not None else "")
            raise ConfigError(self.path, self._field(key), f"must be a number{bound}, got {v!r}")
        return float(v)

    def bool(self, key: builtins.str, default: Any = ...) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        if not isinstance(v, bool):
            raise ConfigError(self.path, self._field(key), f"must be true or false, got {v!r}")
        return v

    def enum(self, key: builtins.str, enum_type: Callable[[builtins.str], T], choices: builtins.list[builtins.str], default: Any = ...) -> T:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v  # type: ignore[no-any-return]
        if v not in choices:
            raise ConfigError(self.path, self._field(key), f"must be one of {choices}, got {v!r}")
        return enum_type(v)

    def mapping(self, key: builtins.str, default: Any = ...) -> dict[Any, Any]:
        v = self.raw(key, default)
        if not isinstance(v, dict):
            raise ConfigError(self.path, self._field(key), f"must be a mapping, got {type(v).__name__}")
        return v

    def list(self, key: builtins.str, default: Any = ...) -> builtins.list[Any]:
        v = self.raw(key, default)
        if not isinstance(v, list):
            raise ConfigError(self.path, self._field(key), f"must be a list, got {type(v).__name__}")
        return v

    def child(self, key: builtins.str) -> _Reader:
        return _Reader(self.path, self.raw(key), self._field(key))

    def unknown_keys(self, allowed: set[builtins.str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            raise ConfigError(self.path, self._field(extra[0]), f"unknown field; allowed: {sorted(allowed)}")


def read_yaml(path: Path | str) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, where, f"not valid YAML: {getattr(e, 'problem', e)}") from None


ACCELERATORS = [a.value for a in Accelerator]


def load_prices(path: Path | str) -> Prices:
    path = Path(path)
    r = _Reader(path, read_yaml(path))
    table = r.mapping("price_per_hour_usd")
    prices: dict[str, float] = {}
    for itype, value in table.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(path, f"price_per_hour_usd.{itype}", f"must be a number > 0, got {value!r}")
        prices[str(itype)] = float(value)
    return Prices(prices, source=r.str("source"), retrieved=r.str("retrieved"), region=r.str("region"))


def load_tiers(path: Path | str) -> TierSet:
    path = Path(path)
    r = _Reader(path, read_yaml(path))
    tiers: dict[str, Tier] = {}
    table = r.mapping("tiers")
    if not table:
        raise ConfigError(path, "tiers", "must define at least one tier")
    for name in table:
        t = r.child("tiers").child(name)
        t.unknown_keys({"p99_ms", "target_compliance"})
        p99 = t.float("p99_ms", default=None, positive=True)
        target = t.float("target_compliance", default=None, positive=True)
        if target is not None and target > 1:
            raise ConfigError(path, f"tiers.{name}.target_compliance", f"must be in (0, 1], got {target}")
        tiers[str(name)] = Tier(str(name), p99, target)
    default = r.str("default_tier")
    if default not in tiers:
        raise ConfigError(path, "default_tier", f"must name a tier {sorted(tiers)}, got {default!r}")
    order = r.list("fallback_order")
    for i, a in enumerate(order):
        if a not in ACCELERATORS:
            raise ConfigError(path, f"fallback_order[{i}]", f"must be one of {ACCELERATORS}, got {a!r}")
    return TierSet(tiers, default, tuple(Accelerator(a) for a in order))


def load_profile(path: Path | str) -> Profile:
    path = Path(path)
    r = _Reader(path, read_yaml(path))
    r.unknown_keys(
        {"model", "accelerator", "instance_type", "latency_ms_by_batch", "instances_per_replica",
         "max_batch_size", "provenance", "p99_over_p50", "cold_start_s"}
    )
    pr = r.child("provenance")
    kind = pr.str("kind")
    if kind not in ("measured", "reference", "online"):
        raise ConfigError(path, "provenance.kind",
                          f"must be 'measured' or 'reference' (or 'online': learned from Triton's statistics), got {kind!r}")
    if kind == "reference":
        pr.str("source")
        pr.str("assumption")
    else:  # measured by the profiler, or learned online from Triton's statistics (router_lib.calibration)
        pr.str("machine")
        if kind == "online":
            pr.str("source")
    prov = Provenance(
        kind=kind,
        date=pr.str("date"),
        source=pr.str("source", default=""),
        assumption=pr.str("assumption", default=""),
        machine=pr.str("machine", default=""),
        triton_version=pr.str("triton_version", default=""),
        model_version=pr.str("model_version", default=""),
        artifact_sha256=pr.str("artifact_sha256", default=""),
    )
    table = r.mapping("latency_ms_by_batch")
    if not table:
        raise ConfigError(path, "latency_ms_by_batch", "must have at least one batch size")
    lat: dict[int, float] = {}
    for b, v in table.items():
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ConfigError(path, f"latency_ms_by_batch.{b}", "batch size must be an integer >= 1")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(path, f"latency_ms_by_batch.{b}", f"must be a number > 0 (ms), got {v!r}")
        lat[b] = float(v)
    max_batch = r.int("max_batch_size", minimum=1)
    if max(lat) > max_batch:
        raise ConfigError(path, "latency_ms_by_batch", f"has batch {max(lat)} above max_batch_size {max_batch}")
    p99_ratio = r.float("p99_over_p50", default=1.2, positive=True)
    if p99_ratio < 1:
        raise ConfigError(path, "p99_over_p50", f"must be >= 1, got {p99_ratio}")
    return Profile(
        model=r.str("model"),
        accelerator=r.enum("accelerator", Accelerator, ACCELERATORS),
        instance_type=r.str("instance_type"),
        latency_ms_by_batch=lat,
        instances_per_replica=r.int("instances_per_replica", minimum=1),
        max_batch_size=max_batch,
        provenance=prov,
        p99_over_p50=p99_ratio,
        cold_start_s=r.float("cold_start_s", minimum=0.0, default=0.0),
    )


def load_profiles(directory: Path | str) -> dict[tuple[str, Accelerator], Profile]:
    """Every ``*.yaml`` in ``directory``; one profile per (model, accelerator).

    A ``<model>.<accelerator>.online.yaml`` (written by ``python -m profiler write-online``) takes
    the place of the offline profile of the same (model, accelerator): writing it there is how a
    calibration is adopted (and ``git rm`` it to go back)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(directory, "", "profiles directory not found")
    out: dict[tuple[str, Accelerator], Profile] = {}
    seen: dict[tuple[str, Accelerator], Path] = {}
    files = sorted(directory.glob("*.yaml"), key=lambda f: (f.name.endswith(".online.yaml"), f.name))
    for f in files:
        p = load_profile(f)
        key = (p.model, p.accelerator)
        if key in out and f.name.endswith(".online.yaml") and not seen[key].name.endswith(".online.yaml"):
            out[key] = p  # the calibrated profile replaces the offline one
            seen[key] = f
            continue
        if key in out:
            raise ConfigError(f, "model", f"duplicate profile for {key[0]} on {key[1].value} (also {seen[key]})")
        out[key] = p
        seen[key] = f
    return out


def _settings_block(path: Path, block: str, raw: dict[str, Any], settings_type: type) -> dict[str, Any]:
    """A fleet-file block of settings (``autoscaling:``, ``routing:``, ``calibration:``): each key a field of
    ``settings_type`` (a frozen dataclass), booleans for its bool fields and numbers for the rest,
    checked by building the settings (their own validation names the field)."""
    from dataclasses import fields

    kinds = {f.name: f.type for f in fields(settings_type) if f.name != "policy"}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in kinds:
            raise ConfigError(path, f"{block}.{key}", f"unknown field; known: {sorted(kinds)}")
        want_bool = kinds[key] in ("bool", bool)
        if want_bool != isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"{block}.{key}", f"must be {'true or false' if want_bool else 'a number'}, "
                              f"got {value!r}")
        out[str(key)] = value
    try:
        settings_type(**out)
    except ValueError as e:
        name = str(e).split(" ", 1)[0].removeprefix(f"{settings_type.__name__}.").removeprefix(f"{block}.")
        raise ConfigError(path, f"{block}.{name}" if name in kinds else block, str(e)) from None
    return out


def load_fleet(path: Path | str, model_names: tuple[str, ...] | None = None) -> Fleet:
    """Load ``fleet.yaml`` and the prices, tiers and profiles it points at (paths relative to it).

    A pool serves each model that has a profile for its accelerator, or the subset listed in its
    ``models`` field.  ``model_names``, when given, are the models defined in the model repository:
    a profile or a pool naming another model is an error.
    """
    path = Path(path)
    r = _Reader(path, read_yaml(path))
    r.unknown_keys({"prices", "tiers", "profiles", "pools", "max_local_replicas", "budget_per_hour_usd",
                    "time_dilation", "autoscaling", "routing", "calibration"})
    base = path.parent
    prices = load_prices(base / r.str("prices"))
    tiers = load_tiers(base / r.str("tiers"))
    profiles = load_profiles(base / r.str("profiles"))
    if model_names is not None:
        for model, acc in profiles:
            if model not in model_names:
                raise ConfigError(path, "profiles", f"profile for unknown model {model!r} ({acc.value}); "
                                  f"models: {sorted(model_names)}")
    pools: list[PoolSpec] = []
    raw_pools = r.list("pools")
    if not raw_pools:
        raise ConfigError(path, "pools", "must list at least one pool")
    names: set[str] = set()
    for i in range(len(raw_pools)):
        p = _Reader(path, raw_pools[i], f"pools[{i}]")
        p.unknown_keys({"name", "accelerator", "instance_type", "replicas", "mode", "outputs", "models",
                        "min_replicas", "max_replicas", "share_tiers"})
        name = p.str("name")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(path, f"pools[{i}].name", f"must be letters, digits, '-' or '_', got {name!r}")
        if name in names:
            raise ConfigError(path, f"pools[{i}].name", f"duplicate pool name {name!r}")
        names.add(name)
        acc = p.enum("accelerator", Accelerator, ACCELERATORS)
        itype = p.str("instance_type")
        if itype not in prices.price_per_hour_usd:
            raise ConfigError(path, f"pools[{i}].instance_type",
                              f"{itype!r} has no price in the prices file; known: {sorted(prices.price_per_hour_usd)}")
        mode = p.enum("mode", PoolMode, [m.value for m in PoolMode])
        outputs = p.enum("outputs", EmulatedOutputs, [o.value for o in EmulatedOutputs], default=EmulatedOutputs.REAL)
        if mode is PoolMode.REAL and outputs is EmulatedOutputs.SYNTHETIC:
            raise ConfigError(path, f"pools[{i}].outputs", "synthetic outputs are only for emulated pools")
        available = tuple(sorted(m for (m, a) in profiles if a is acc))
        if p.has("models"):
            wanted = tuple(str(m) for m in p.list("models"))
            for j, m in enumerate(wanted):
                if m not in available:
                    raise ConfigError(path, f"pools[{i}].models[{j}]",
                                      f"no {acc.value} profile for model {m!r}; profiled: {list(available)}")
            models = wanted
        else:
            models = available
        if not models:
            raise ConfigError(path, f"pools[{i}]", f"no model has a profile for accelerator {acc.value}")
        low = p.int("min_replicas", minimum=0) if p.has("min_replicas") else None
        high = p.int("max_replicas", minimum=1) if p.has("max_replicas") else None
        replicas = p.int("replicas", minimum=0 if low == 0 else 1)
        if low is not None and replicas < low:
            raise ConfigError(path, f"pools[{i}].replicas", f"must be >= min_replicas {low}, got {replicas}")
        if high is not None and replicas > high:
            raise ConfigError(path, f"pools[{i}].replicas", f"must be <= max_replicas {high}, got {replicas}")
        pools.append(PoolSpec(
            name=name, accelerator=acc, instance_type=itype, price_per_hour_usd=prices.of(itype),
            replicas=replicas, mode=mode, outputs=outputs, models=models, min_replicas=low, max_replicas=high,
            share_tiers=p.bool("share_tiers", default=False),
        ))
    all_models = tuple(sorted({m for pool in pools for m in pool.models}))
    local_limit = r.int("max_local_replicas", minimum=1) if r.has("max_local_replicas") else None
    if local_limit is not None and sum(p.replica_bounds[0] for p in pools) > local_limit:
        raise ConfigError(path, "max_local_replicas", f"{local_limit} is below the pools' min_replicas together "
                          f"({sum(p.replica_bounds[0] for p in pools)})")
    budget = r.float("budget_per_hour_usd", positive=True) if r.has("budget_per_hour_usd") else None
    from router_lib.capacity_types import CapacitySettings
    from router_lib.policy_types import PolicySettings

    autoscaling = _settings_block(path, "autoscaling", r.mapping("autoscaling") if r.has("autoscaling") else {},
                                  CapacitySettings)
    routing = _settings_block(path, "routing", r.mapping("routing") if r.has("routing") else {}, PolicySettings)
    from router_lib.calibration import CalibrationSettings

    calibration = _settings_block(path, "calibration", r.mapping("calibration") if r.has("calibration") else {},
                                  CalibrationSettings)
    fleet = Fleet(tuple(pools), profiles, tiers, prices, all_models, local_limit, budget, autoscaling=autoscaling,
                  routing=routing, calibration=calibration)
    if r.has("time_dilation"):
        k = r.float("time_dilation", minimum=1.0)
        if any(not p.emulated for p in pools) and k != 1.0:
            raise ConfigError(path, "time_dilation", "only a fleet of emulated pools can run in dilated time "
                              "(a real pool's service time cannot be slowed down)")
        fleet = dilate(fleet, k)
    return fleet
