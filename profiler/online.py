"""``python -m profiler write-online``: a profile learned online (``router_lib.calibration``)
written back as ``profiles/<model>.<accelerator>.online.yaml`` (provenance ``online``, date,
machine), from a running platform's ``/status`` or from the control server's state record.

Refused, with the reason: a calibration that is not confident (nothing learned would be written),
and one learned on an emulated pool unless asked (it measured the emulation of the profile, not
the accelerator; adopting it would make the emulation emulate itself).  A dilated fleet's times
are divided by its dilation, so the file holds real time like every profile.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from router_lib.calibration import CalibrationSettings, CalibrationState, calibration_of
from router_lib.config import load_fleet, load_profile, load_profiles
from router_lib.domain import Accelerator, Fleet, Profile

HEADER = ("# Calibrated online from Triton's statistics (python -m profiler write-online); do not edit by hand.\n"
          "# latency_ms_by_batch: p50 ms of one execution (Triton compute input+infer+output, mean -> p50 by the\n"
          "# tail factor) plus the overhead outside Triton where it was measured; see provenance.source.\n")


class OnlineProfileError(RuntimeError):
    """The calibration cannot be written back (the message says why)."""


def _status(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=5.0) as r:  # noqa: S310 (the operator's own server)
            data = json.loads(r.read().decode())
    else:
        data = json.loads(Path(source).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("calibration"), list):
        raise OnlineProfileError(f"{source}: no 'calibration' list: not the /status of a control server that "
                                 "calibrates online")
    return data


def profile_from_status(status: dict[str, Any], source: str, model: str, pool: str, priors: dict[
        tuple[str, Accelerator], Profile], machine: str, allow_emulated: bool) -> Profile:
    """The online profile of ``model`` on ``pool`` from a ``/status`` document."""
    entries = [e for e in status["calibration"] if e.get("model") == model and pool in e.get("pools", [])]
    if not entries:
        known = sorted({(e.get("model"), p) for e in status["calibration"] for p in e.get("pools", [])})
        raise OnlineProfileError(f"{source}: no calibration of model {model!r} on pool {pool!r}; known: {known}")
    entry = entries[0]
    pools = {p["name"]: p for p in status.get("pools", [])}
    if pools.get(pool, {}).get("emulated") and not allow_emulated:
        raise OnlineProfileError(f"pool {pool!r} is emulated: its statistics measure the emulation, not the "
                                 "accelerator (--allow-emulated writes it anyway, labelled)")
    if not entry.get("confident"):
        raise OnlineProfileError(f"the calibration of {model} on {pool} is not confident yet "
                                 f"({entry.get('executions')} executions): nothing learned to write")
    accelerator = Accelerator(entry["accelerator"])
    prior = priors.get((model, accelerator))
    if prior is None:
        raise OnlineProfileError(f"no offline profile of {model} on {accelerator.value} to take the shape from")
    k = float(entry.get("time_dilation", 1.0))
    table = {int(b): float(v) / k for b, v in entry["profile"]["latency_ms_by_batch"].items()}
    emulated = " (EMULATED pool: the emulation's service time, not the accelerator's)" if pools.get(
        pool, {}).get("emulated") else ""
    return _online(prior, table, entry["profile"]["date"], entry["profile"]["source"] + emulated, machine)


def profile_from_record(record: dict[str, Any], fleet: Fleet, model: str, pool: str, machine: str,
                        allow_emulated: bool, settings: CalibrationSettings) -> Profile:
    """The online profile of ``model`` on ``pool`` from a state record's ``calibration``."""
    if not record.get("calibration"):
        raise OnlineProfileError("the state record holds no calibration (written before it, or never calibrated)")
    state = CalibrationState.from_json(record["calibration"], "state record: calibration")
    spec = fleet.pool(pool)
    if spec.emulated and not allow_emulated:
        raise OnlineProfileError(f"pool {pool!r} is emulated: its statistics measure the emulation, not the "
                                 "accelerator (--allow-emulated writes it anyway, labelled)")
    prior = fleet.profile(model, spec.accelerator)
    if prior is None or model not in spec.models:
        raise OnlineProfileError(f"pool {pool!r} does not serve {model!r} with a profile; it serves {list(spec.models)}")
    cal = calibration_of(state, prior, (pool,), settings)
    if not cal.confident:
        raise OnlineProfileError(f"the calibration of {model} on {pool} is not confident yet "
                                 f"({cal.executions:.0f} executions): nothing learned to write")
    learned = cal.profile(machine)
    k = fleet.time_dilation
    table = {b: v / k for b, v in learned.latency_ms_by_batch.items()}
    undilated = replace(learned, cold_start_s=learned.cold_start_s / k)
    emulated = " (EMULATED pool: the emulation's service time, not the accelerator's)" if spec.emulated else ""
    return _online(undilated, table, learned.provenance.date, learned.provenance.source + emulated, machine)


def _online(prior: Profile, table: dict[int, float], date: str, source: str, machine: str) -> Profile:
    from router_lib.domain import Provenance

    return replace(prior, latency_ms_by_batch=dict(sorted(table.items())),
                   provenance=Provenance(kind="online", date=date, source=source, machine=machine,
                                         triton_version=prior.provenance.triton_version,
                                         model_version=prior.provenance.model_version,
                                         artifact_sha256=prior.provenance.artifact_sha256))


def document(p: Profile) -> dict[str, Any]:
    prov = p.provenance
    return {
        "model": p.model,
        "accelerator": p.accelerator.value,
        "instance_type": p.instance_type,
        "instances_per_replica": p.instances_per_replica,
        "max_batch_size": p.max_batch_size,
        "latency_ms_by_batch": {int(b): round(float(v), 6) for b, v in sorted(p.latency_ms_by_batch.items())},
        "p99_over_p50": float(p.p99_over_p50),
        **({"cold_start_s": float(p.cold_start_s)} if p.cold_start_s else {}),
        "provenance": {k: v for k, v in {
            "kind": prov.kind, "date": prov.date, "machine": prov.machine, "source": prov.source,
            "assumption": prov.assumption,
            "triton_version": prov.triton_version, "model_version": prov.model_version,
            "artifact_sha256": prov.artifact_sha256}.items() if v},
    }


def write_online_profile(profiles_dir: Path, profile: Profile) -> Path:
    """Write ``<model>.<accelerator>.online.yaml`` atomically, after the router's loader accepted it."""
    path = profiles_dir / f"{profile.model}.{profile.accelerator.value}.online.yaml"
    profiles_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=profiles_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(HEADER + yaml.safe_dump(document(profile), sort_keys=False, width=100))
        load_profile(tmp)  # raises ConfigError naming the field if this is not a profile
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def cmd_write_online(args: Any) -> int:
    from model_repository.definitions import load_models
    from profiler.profile_io import this_machine

    try:
        if args.status:
            status = _status(args.status)
            pool_spec = next((p for p in status.get("pools", []) if p.get("name") == args.pool), {})
            machine = args.machine or this_machine(pool_spec.get("instance_type", "the priced instance"))
            profile = profile_from_status(status, args.status, args.model, args.pool,
                                          load_profiles(args.profiles_dir), machine, args.allow_emulated)
        else:
            fleet = load_fleet(args.fleet, tuple(load_models()))
            machine = args.machine or this_machine(fleet.pool(args.pool).instance_type)
            record = json.loads(Path(args.state).read_text())
            profile = profile_from_record(record, fleet, args.model, args.pool, machine, args.allow_emulated,
                                          CalibrationSettings())
    except (OnlineProfileError, KeyError, ValueError, OSError) as e:
        raise SystemExit(f"write-online: {e}") from None
    path = write_online_profile(args.profiles_dir, profile)
    table = ", ".join(f"{b}: {v:.3f}" for b, v in sorted(profile.latency_ms_by_batch.items()))
    print(f"wrote {path}: {profile.model} on {profile.accelerator.value}, latency_ms_by_batch {{{table}}}")
    return 0
