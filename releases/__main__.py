"""``python -m releases``: start and steer canary releases through the control server's admin API.

    python -m releases start release.yaml --endpoint cpu=127.0.0.1:9100:9101:9102 [--admin URL]
    python -m releases start release.yaml --discover-candidates [--kube-namespace NS] [--kubeconfig F]
        (in a cluster: the candidate's EndpointSlices, releases/discover.py)
        [--preflight-measure [--preflight-stable POOL=HOST:GRPC_PORT ...] [--preflight-seconds S]]
        [--preflight STABLE_PROFILE.yaml:CANDIDATE_PROFILE.yaml ...]   (the pre-flight gate)
    python -m releases status [NAME] [--json]
    python -m releases pause|resume|promote|abort NAME [--note TEXT]
    python -m releases comparator --stable HOST:HTTP[:GRPC] --candidate HOST:HTTP[:GRPC] [--port N]
        [--grpc-port N]   (shadow mode; with --grpc-port, mirrored gRPC ModelInfer calls are compared too)

``--endpoint POOL=HOST:HTTP_PORT:GRPC_PORT[:METRICS_PORT]`` names a candidate replica (repeat it per
replica).  The spec is checked here first (errors name the file and the field), then by the server
against the fleet's tiers and pools.  Exit status: 0 done, 1 refused by the server, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from router_lib.release import CandidateEndpoint
from router_lib.release_spec import ReleaseSpecError, load_release_spec

DEFAULT_ADMIN = os.environ.get("TMAS_CONTROL_ADMIN", "http://127.0.0.1:18001")


class CliError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def parse_endpoint(text: str) -> CandidateEndpoint:
    pool, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not pool or len(parts) not in (3, 4) or not all(p.isdigit() for p in parts[1:]):
        raise CliError(f"--endpoint {text!r}: expected POOL=HOST:HTTP_PORT:GRPC_PORT[:METRICS_PORT]")
    host, http_port, grpc_port = parts[0], int(parts[1]), int(parts[2])
    metrics = f"http://{host}:{parts[3]}/metrics" if len(parts) == 4 else ""
    return CandidateEndpoint(pool, host, http_port, grpc_port, metrics)


def split_targets(texts: list[str], flag: str, need_grpc: bool) -> tuple[list[str], list[str]]:
    """``HOST:HTTP_PORT[:GRPC_PORT]`` each -> (HTTP targets, gRPC targets)."""
    http, grpc = [], []
    for text in texts:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not all(p.isdigit() for p in parts[1:]):
            raise CliError(f"{flag} {text!r}: expected HOST:HTTP_PORT[:GRPC_PORT]")
        if need_grpc and len(parts) != 3:
            raise CliError(f"{flag} {text!r}: with --grpc-port every replica needs its gRPC port (HOST:HTTP_PORT:GRPC_PORT)")
        http.append(f"{parts[0]}:{parts[1]}")
        if len(parts) == 3:
            grpc.append(f"{parts[0]}:{parts[2]}")
    return http, grpc


def replica_tls(cert_dir: Path | None) -> Any:
    """``ReplicaTls`` for a platform whose replicas require mTLS (None: plaintext); a folder
    without the files is a CliError naming the missing one."""
    if cert_dir is None:
        return None
    from xds_server.tls import CertDir, MtlsConfigError, ReplicaTls

    try:
        tls = ReplicaTls(CertDir(cert_dir))
        tls.client.check()
        tls.server.check()
    except MtlsConfigError as e:
        raise CliError(f"--mtls-dir {cert_dir}: {e}") from None
    return tls


def call(admin: str, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{admin.rstrip('/')}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the operator's server)
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", str(e))
        except ValueError:
            message = str(e)
        raise CliError(f"control server refused ({e.code}): {message}", 1) from None
    except (urllib.error.URLError, OSError) as e:
        raise CliError(f"cannot reach the control server at {admin}: {e}", 1) from None


def describe(release: dict[str, Any]) -> str:
    weights = ", ".join(f"{t} {p:g}%" for t, p in release["candidate_weight_pct"].items())
    lines = [f"{release['name']}: {release['model']} v{release['stable_version']} -> v{release['candidate_version']}"
             f"  {release['phase']}  stage {release['stage']}/{release['last_stage']}  candidate: {weights}"]
    if release.get("reason"):
        lines.append(f"  reason: {release['reason']}")
    if release.get("holding"):
        lines.append(f"  {release['holding']}")
    for e in release.get("events", [])[-5:]:
        lines.append(f"  event {e['kind']}: {e['text']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", default=DEFAULT_ADMIN, help=f"control server admin URL (default {DEFAULT_ADMIN})")
    ap = argparse.ArgumentParser(prog="python -m releases", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", parents=[common], help="validate a release spec and start it")
    s.add_argument("spec")
    s.add_argument("--endpoint", action="append", default=[], help="POOL=HOST:HTTP:GRPC[:METRICS] of a candidate replica")
    s.add_argument("--preflight", action="append", default=[], metavar="STABLE.yaml:CANDIDATE.yaml",
                   help="profiles (python -m profiler) of stable and candidate on a pool; a regression stops the release")
    s.add_argument("--discover-candidates", action="store_true",
                   help="find the candidate replicas from their EndpointSlices (Service labelled "
                        "app.kubernetes.io/name=triton-candidate, inference.platform/model and /version)")
    s.add_argument("--kube-namespace", default="inference")
    s.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    s.add_argument("--kube-host", help="API server URL without credentials (kubectl proxy, tests)")
    s.add_argument("--preflight-measure", action="store_true",
                   help="profile the candidate replica of each pool (and stable beside it) before any traffic; "
                        "a confirmed regression beyond p95_regression_pct stops the release")
    s.add_argument("--preflight-stable", action="append", default=[], metavar="POOL=HOST:GRPC_PORT",
                   help="a stable replica of POOL to profile beside the candidate (default: a stable Triton "
                        "started here on the CPU)")
    s.add_argument("--preflight-seconds", type=float, default=1.5, help="measurement window per batch size")
    s.add_argument("--mtls-dir", type=Path, default=None,
                   help="the platform's certificate folder (build/certs) when its replicas require mTLS: the pre-flight "
                        "reaches them as Envoy does")
    s.add_argument("--comparator", default="", help="HOST:HTTP_PORT[:GRPC_PORT] of the shadow comparator (spec with "
                   "shadow.mirror_percent; with a gRPC port the model's gRPC routes are mirrored too)")
    cmp = sub.add_parser("comparator", help="run the shadow comparator (the target of Envoy's mirroring)")
    cmp.add_argument("--stable", action="append", required=True, help="HOST:HTTP_PORT[:GRPC_PORT] of a stable replica")
    cmp.add_argument("--candidate", action="append", required=True,
                     help="HOST:HTTP_PORT[:GRPC_PORT] of a candidate replica")
    cmp.add_argument("--mtls-dir", type=Path, default=None,
                     help="the platform's certificate folder when its replicas' gRPC ports require mTLS")
    cmp.add_argument("--port", type=int, default=0, help="HTTP port (0: any free one)")
    cmp.add_argument("--grpc-port", type=int, default=None,
                     help="also serve mirrored gRPC on this port (0: any free one); needs the replicas' gRPC ports")
    cmp.add_argument("--workers", type=int, default=2, help="comparison threads (0: answer mirrors, compare nothing)")
    cmp.add_argument("--queue", type=int, default=64, help="mirrored requests waiting to be compared (more: dropped)")
    cmp.add_argument("--http-front", choices=["asyncio", "threads"], default="asyncio")
    cmp.add_argument("--nice", type=int, default=0,
                     help="lower the comparator's CPU priority by this much (0-19): on a machine it shares with the "
                          "live path, comparisons then use only what the live path leaves")
    st = sub.add_parser("status", parents=[common], help="releases, their phase, weights and last events")
    st.add_argument("name", nargs="?")
    st.add_argument("--json", action="store_true")
    for cmd in ("pause", "resume", "promote", "abort"):
        c = sub.add_parser(cmd, parents=[common], help=f"{cmd} a release")
        c.add_argument("name")
        c.add_argument("--note", default="")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            spec = load_release_spec(args.spec)
            endpoints = [parse_endpoint(e) for e in args.endpoint]
            if args.discover_candidates:
                if endpoints:
                    raise CliError("give either --endpoint or --discover-candidates, not both")
                from control.discovery_k8s import discovery_api
                from control.ports import DiscoveryError
                from releases.discover import CandidateDiscoveryError, discover_candidates

                try:
                    api = discovery_api(host=args.kube_host, kubeconfig=args.kubeconfig)
                    endpoints = discover_candidates(api, spec.model, spec.candidate_version, args.kube_namespace)
                except (DiscoveryError, CandidateDiscoveryError) as e:
                    raise CliError(str(e), 1) from None
                print("discovered: " + ", ".join(f"{e.pool}={e.host}:{e.http_port}:{e.grpc_port}" for e in endpoints))
            if not endpoints:
                raise CliError("start needs at least one --endpoint (a candidate replica) or --discover-candidates")
            if args.preflight:
                from releases.preflight import preflight

                pairs = []
                for text in args.preflight:
                    stable, sep, cand = text.partition(":")
                    if not sep or not stable or not cand:
                        raise CliError(f"--preflight {text!r}: expected STABLE_PROFILE.yaml:CANDIDATE_PROFILE.yaml")
                    pairs.append((Path(stable), Path(cand)))
                gate = preflight(spec, pairs)
                print(gate.report)
                if not gate.passed:
                    return 1
            if args.preflight_measure:
                from releases.preflight import MeasurePlan, preflight_measured

                if not 0.2 <= args.preflight_seconds <= 60:
                    raise CliError(f"--preflight-seconds {args.preflight_seconds:g}: expected 0.2 to 60")
                stable_urls = {}
                for text in args.preflight_stable:
                    pool, sep, address = text.partition("=")
                    host, _, port = address.rpartition(":")
                    if not sep or not pool or not host or not port.isdigit():
                        raise CliError(f"--preflight-stable {text!r}: expected POOL=HOST:GRPC_PORT")
                    stable_urls[pool] = address
                gate = preflight_measured(spec, endpoints, stable_urls=stable_urls,
                                          plan=MeasurePlan(measure_s=args.preflight_seconds),
                                          progress=lambda line: print(line, flush=True),
                                          replica_tls=replica_tls(args.mtls_dir))
                print(gate.report, flush=True)
                if not gate.passed:
                    return 1
            elif args.preflight_stable:
                raise CliError("--preflight-stable needs --preflight-measure")
            answer = call(args.admin, "POST", "/releases/start",
                          {"spec": spec.to_json(), "endpoints": [e.to_json() for e in endpoints],
                           "comparator": args.comparator})
            print(f"started {spec.name}: " + "; ".join(a["text"] for a in answer["actions"]))
        elif args.cmd == "comparator":
            import signal
            import threading

            from releases.comparator import Comparator

            stable, stable_grpc = split_targets(args.stable, "--stable", args.grpc_port is not None)
            candidate, candidate_grpc = split_targets(args.candidate, "--candidate", args.grpc_port is not None)
            if not 0 <= args.nice <= 19:
                raise CliError(f"--nice {args.nice}: expected 0 to 19")
            if args.workers < 0 or args.queue < 1:
                raise CliError("--workers must be >= 0 and --queue >= 1")
            if args.nice:
                os.nice(args.nice)
            comparator = Comparator(stable, candidate, port=args.port, grpc_port=args.grpc_port,
                                    stable_grpc=stable_grpc, candidate_grpc=candidate_grpc, workers=args.workers,
                                    queue_size=args.queue, http_front=args.http_front,
                                    replica_tls=replica_tls(args.mtls_dir)).start()
            print(f"READY comparator={comparator.address}", flush=True)
            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            signal.signal(signal.SIGINT, lambda *_: done.set())
            done.wait()
            comparator.stop()
        elif args.cmd == "status":
            releases = call(args.admin, "GET", "/releases")["releases"]
            if args.name:
                releases = [r for r in releases if r["name"] == args.name]
                if not releases:
                    raise CliError(f"no release named {args.name!r}", 1)
            print(json.dumps(releases, indent=1) if args.json else
                  ("\n".join(describe(r) for r in releases) or "no releases"))
        else:
            from urllib.parse import quote

            answer = call(args.admin, "POST", f"/releases/{quote(args.name)}/{args.cmd}?note={quote(args.note)}")
            print("; ".join(a["text"] for a in answer["actions"]))
    except ReleaseSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
