"""The release part of the admin HTTP (``control.admin_http`` routes ``/releases...`` here).

GET  /releases                       every release: phase, stage, weights per tier, why, events
POST /releases/start                 body JSON ``{"spec": {...}, "endpoints": [{pool, host, http_port,
                                     grpc_port, metrics_url}, ...], "comparator": "HOST:HTTP_PORT[:GRPC_PORT]"}``
                                     (comparator: shadow mode only; with a gRPC port, gRPC is mirrored
                                     too): validate, start, publish, wait
                                     for Envoy's ACK
POST /releases/NAME/pause|resume|promote|abort[?note=TEXT]

Every error is a JSON ``{"error": ...}`` naming what is wrong: 400 for a bad spec or a command
that does not apply, 404 for an unknown release, 504 when Envoy did not ACK in time.
"""

from __future__ import annotations

import json
from typing import Any

from control.loop import ControlLoop
from router_lib.release import CandidateEndpoint, Command, ReleaseBook, ReleaseCommandError, comparator_address
from router_lib.release_spec import ReleaseSpecError, parse_release_spec


def releases_view(book: ReleaseBook) -> list[dict[str, Any]]:
    """What ``/status`` and ``GET /releases`` show of each release."""
    out = []
    for name, state in sorted(book.releases.items()):
        rollbacks = [e for e in state.events if e.kind.value == "rollback"]
        out.append({
            "name": name, "model": state.spec.model, "phase": state.phase.value,
            "stable_version": state.spec.stable_version, "candidate_version": state.spec.candidate_version,
            "stage": state.stage, "last_stage": state.last_stage,
            "candidate_weight_pct": {t: bp / 100 for t, bp in state.weights_bp().items()},
            "reason": state.reason, "holding": state.holding,
            "rolled_back": bool(rollbacks), "rollback_reason": rollbacks[-1].text if rollbacks else None,
            "candidate_replicas": [f"{e.pool}/{e.host}:{e.http_port}" for e in state.endpoints],
            "comparator": state.comparator or None,
            "events": [e.to_json() for e in state.events],
            "spec": state.spec.to_json(),
        })
    return out


def _endpoints(raw: Any) -> list[CandidateEndpoint]:
    if not isinstance(raw, list):
        raise ReleaseCommandError(f"'endpoints' must be a list of {{pool, host, http_port, grpc_port}}, got {raw!r}")
    out = []
    for i, e in enumerate(raw):
        try:
            out.append(CandidateEndpoint.from_json(e))
        except (KeyError, TypeError, ValueError) as err:
            raise ReleaseCommandError(f"endpoints[{i}]: {type(err).__name__}: {err}") from None
    return out


def handle_get(loop: ControlLoop, path: str) -> tuple[int, Any] | None:
    if path == "/releases":
        return 200, {"releases": releases_view(loop.view.releases)}
    return None


def handle_post(loop: ControlLoop, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any] | None:
    if not path.startswith("/releases/"):
        return None
    parts = path.strip("/").split("/")
    try:
        if parts == ["releases", "start"]:
            try:
                data = json.loads(body or b"{}")
            except json.JSONDecodeError as e:
                return 400, {"error": f"body is not JSON: {e}"}
            if not isinstance(data, dict) or "spec" not in data:
                return 400, {"error": "body must be {\"spec\": {...}, \"endpoints\": [...]}"}
            spec = parse_release_spec(data["spec"], "spec", known_tiers=tuple(loop.fleet.tiers.tiers))
            comparator = str(data.get("comparator") or "")
            if comparator:
                try:
                    comparator_address(comparator)
                except ValueError as e:
                    return 400, {"error": f"'comparator': {e}"}
            actions, version = loop.start_release(spec, _endpoints(data.get("endpoints", [])), comparator=comparator)
        elif len(parts) == 3 and parts[0] == "releases":
            try:
                command = Command(parts[2])
            except ValueError:
                return 404, {"error": f"no such command {parts[2]!r}; try {[c.value for c in Command]}"}
            actions, version = loop.release_command(parts[1], command, query.get("note", [""])[0])
        else:
            return 404, {"error": f"no such path {path!r}; try /releases/start or /releases/NAME/COMMAND"}
    except (ReleaseSpecError, ReleaseCommandError) as e:
        return 400, {"error": str(e)}
    except KeyError as e:
        return 404, {"error": str(e).strip('"')}
    except TimeoutError as e:
        return 504, {"error": str(e)}
    return 200, {"actions": [a.to_json() for a in actions], "snapshot_version": version}
