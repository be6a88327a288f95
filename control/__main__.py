"""``python -m control serve``: the control server as its own process.

It reads the fleet config, follows the runtime file the fleet supervisor writes (or, in a cluster,
the Triton Services' EndpointSlices: ``--discovery=kubernetes``), serves ADS to
Envoy and proxyless gRPC clients, and runs the control loop every ``--interval-s``.  It can be
killed and restarted at any time: Envoy keeps its last config meanwhile, and the restarted server
republishes the persisted weights before deciding anything new.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from control.admin_http import AdminServer
from control.leadership import ElectedLoop, FileLease, LeaderLease
from control.lease_k8s import KubernetesLease
from control.release_watch import ReleaseWatch, envoy_admin_base
from control.releases import ReleaseMetrics
from control.server import dataplane_settings, wire_local
from control.tracing import start_tracing
from model_repository.definitions import load_models
from router_lib.calibration import CalibrationSettings
from router_lib.config import load_fleet
from router_lib.policy_types import PolicySettings
from xds_server.edge_config import edge_settings_for
from xds_server.edge_validation import schemas_from_models
from xds_server.overload import tier_resilience
from xds_server.server import XdsServer
from xds_server.tls import CertDir, MtlsConfigError, Role, UpstreamTls

log = logging.getLogger("control")


def serve(args: argparse.Namespace) -> int:
    models = load_models()
    fleet = load_fleet(args.fleet, tuple(models))
    composing = {step: name for name, m in models.items() for step in m.composing_models}
    registry = CollectorRegistry()
    # --mtls-dir (docs/security.md): ADS only over mTLS, and Envoy dials every replica's gRPC port with
    # its client certificate.  Checked before anything listens, so a missing file is one clear error.
    cert_dir = CertDir(args.mtls_dir).check() if args.mtls_dir is not None else None
    xds = XdsServer(port=args.xds_port, host=args.listen_address, registry=registry,
                    tls=cert_dir.identity(Role.XDS_SERVER) if cert_dir is not None else None)
    port = xds.start()
    policy = PolicySettings(**fleet.routing)  # type: ignore[arg-type]
    settings = dataplane_settings(fleet, policy, http_port=args.http_port, grpc_port=args.grpc_port,
                                  listen_address=args.envoy_listen_address, tracing=start_tracing())
    if cert_dir is not None:
        settings = dataclasses.replace(settings, upstream_tls=UpstreamTls.to(Role.TRITON, cert_dir))
    # --edge-config / --edge-validate (docs/edge.md): authentication and validation at the edge.
    settings = dataclasses.replace(settings, edge=edge_settings_for(
        args.edge_config, args.edge_validate, tiers=settings.tiers, models=schemas_from_models(models)))
    # --tier-timeouts (docs/overload.md): each tier's per-try timeout from its bound (x the factor),
    # gold hedged, a retry budget; a hung replica is ejected by timeouts.  Priority writing and shed
    # mapping only when a pool's model configs declare the levels (fleet file: share_tiers).
    if args.tier_timeouts is not None:
        settings = dataclasses.replace(settings, **tier_resilience(
            fleet.tiers, per_try_factor=args.tier_timeouts, shed=fleet.tiers_share_a_pool,
            best_effort_per_try_ms=2000.0 * fleet.time_dilation))
    discovery = None
    if args.discovery == "kubernetes":
        from control.discovery_k8s import EndpointSliceDiscovery, RepositoryIndexProbe, SliceSelection, discovery_api

        selection = SliceSelection(namespace=args.k8s_namespace, label_selector=args.k8s_label_selector,
                                   pool_label=args.k8s_pool_label)
        # A replica serves what its Triton's repository index shows READY, not what fleet.yaml says.
        index_probe = RepositoryIndexProbe({p.name: p.models for p in fleet.pools})
        discovery = EndpointSliceDiscovery(discovery_api(kubeconfig=args.kubeconfig), selection,
                                           index_probe=index_probe).start()
        if not discovery.wait_synced(args.k8s_sync_timeout_s):
            log.warning("EndpointSlices not listed within %.0fs; serving listeners only until they are",
                        args.k8s_sync_timeout_s)
    store = coordination_api = None
    if args.state_configmap is not None or args.k8s_lease is not None:
        from control.lease_k8s import ConfigMapStateStore, cluster_apis

        coordination_api, core_api = cluster_apis(kubeconfig=args.kubeconfig)
        if args.state_configmap is not None:
            store = ConfigMapStateStore(core_api, namespace=args.k8s_namespace, name=args.state_configmap)
    metrics = clock = None
    if args.metrics_source == "prometheus":
        from control.metrics_prometheus import PrometheusApiSource

        # Every Envoy and every Triton, as Prometheus scrapes them (not the one Envoy a Service
        # URL happens to reach). Its queries take wall-clock instants, so the loop's clock is one.
        metrics = PrometheusApiSource(args.prometheus_url, window_s=args.prometheus_window_s, composing=composing,
                                      triton_job=args.prometheus_triton_job)
        clock = time.time
    controller = wire_local(
        fleet=fleet,
        store=store,
        metrics=metrics,
        clock=clock,
        xds=xds,
        discovery=discovery,
        runtime_path=args.runtime,
        state_path=args.state,
        composing=composing,
        envoy_metrics_url=args.envoy_metrics_url,
        dataplane=settings,
        policy=policy,
        registry=registry,
        desired_path=args.desired,
        calibration=CalibrationSettings(**fleet.calibration),  # type: ignore[arg-type]
    )
    lease: LeaderLease | None = None
    if args.lease_file is not None:
        lease = FileLease(args.lease_file, args.identity)
    elif args.k8s_lease is not None:
        lease = KubernetesLease(coordination_api, namespace=args.k8s_namespace, name=args.k8s_lease,
                                identity=args.identity, duration_s=args.k8s_lease_duration_s)
    if lease is not None:
        controller.elected = ElectedLoop(controller.loop, lease)
    resumed = controller.loop.resume()
    # Releases (docs/releases.md): actions exported as metrics; the watcher is the fast path.
    release_metrics = ReleaseMetrics(registry, controller.loop.view.releases)
    controller.loop.release_listeners.append(release_metrics)
    controller.loop.release_push_observers.append(release_metrics.push_observed)
    watch = None
    if args.release_poll_s > 0:
        elected = controller.elected  # several control servers: only the leader watches (docs/releases.md)
        watch = ReleaseWatch(controller.loop, envoy_admin_base(args.envoy_metrics_url), interval_s=args.release_poll_s,
                             leader=(lambda: elected.leader) if elected is not None else None).start()
    admin = AdminServer(controller, port=args.admin_port, host=args.listen_address)
    admin_port = admin.start()
    log.info(
        "xDS on %s:%d, admin on %s:%d, Envoy listeners on %s, discovery %s, %s",
        args.listen_address,
        port,
        args.listen_address,
        admin_port,
        args.envoy_listen_address,
        args.discovery,
        "resumed persisted weights" if resumed else "no persisted state",
    )
    print(f"READY xds_port={port} admin_port={admin_port} resumed={resumed}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(args.interval_s):
        try:
            controller.tick()
        except Exception:  # one bad tick must not take the control plane down
            log.exception("control loop tick failed")
    if watch is not None:
        watch.stop()
    if lease is not None:
        lease.release()  # a follower takes over at once instead of waiting the lease out
    admin.stop()
    xds.stop()
    if discovery is not None:
        discovery.stop()
    return 0


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address (Envoy binds addresses, not names)") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m control", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the control server")
    s.add_argument("--fleet", type=Path, default=Path("fleet.yaml"))
    s.add_argument("--discovery", choices=("runtime-file", "kubernetes"), default="runtime-file",
                   help="where replicas come from: the local supervisor's --runtime file, or the Triton "
                        "Services' EndpointSlices (list + watch; in a pod through its service account)")
    s.add_argument("--runtime", type=Path, default=None,
                   help="runtime file written by the fleet supervisor (--discovery=runtime-file)")
    s.add_argument("--k8s-namespace", default="inference", help="namespace of the Triton Services")
    s.add_argument("--k8s-label-selector", default="app.kubernetes.io/name=triton",
                   help="label selector of the Triton pools' EndpointSlices (they carry their Service's labels)")
    s.add_argument("--k8s-pool-label", default="inference.platform/pool", help="label naming a slice's pool")
    s.add_argument("--k8s-sync-timeout-s", type=float, default=10.0,
                   help="wait this long for the first EndpointSlice list before serving")
    s.add_argument("--kubeconfig", default=None, help="outside a pod: kubeconfig to use (default: in-cluster)")
    s.add_argument("--state", type=Path, default=None,
                   help="persisted state (weights, health, last snapshot): a JSON file (or --state-configmap)")
    s.add_argument("--state-configmap", default=None,
                   help="in a cluster: keep the state record in this ConfigMap of --k8s-namespace (shared by replicas)")
    s.add_argument("--k8s-lease", default=None,
                   help="in a cluster: the coordination.k8s.io Lease (in --k8s-namespace) whose holder decides")
    s.add_argument("--k8s-lease-duration-s", type=int, default=10, help="how long a silent leader keeps the lease")
    s.add_argument("--desired", type=Path, default=None,
                   help="write desired replicas per pool here for the local supervisor (default: fixed fleet)")
    s.add_argument("--xds-port", type=int, default=18000)
    s.add_argument("--admin-port", type=int, default=18001)
    s.add_argument("--mtls-dir", type=Path, default=None,
                   help="certificates from `python -m xds_server.certs`: serve ADS over mTLS only and reach "
                        "Triton's gRPC ports over mTLS (default: plaintext; in a cluster the mesh does mTLS)")
    s.add_argument("--edge-config", type=Path, default=None,
                   help="edge.yaml: JWT authentication, tier entitlement, rate limit per identity, strict "
                        "validation (docs/edge.md; the cluster runs closed mode); default: no edge filters")
    s.add_argument("--edge-validate", action="store_true",
                   help="without --edge-config: open mode with strict validation against the models' schemas")
    s.add_argument("--tier-timeouts", type=float, default=None, metavar="FACTOR",
                   help="per-try timeout of each tier = its p99 bound x FACTOR (bronze: 2 s), gold hedged, retry "
                        "budget, hung replicas ejected (docs/overload.md); default: one route timeout, as before")
    s.add_argument("--envoy-metrics-url", default=None, help="Envoy admin /stats/prometheus URL")
    s.add_argument("--metrics-source", choices=("scrape", "prometheus"), default="scrape",
                   help="scrape Triton replicas and --envoy-metrics-url directly, or query --prometheus-url "
                        "(every Envoy and Triton it scrapes: what a cluster with several Envoys needs)")
    s.add_argument("--prometheus-url", default=None, help="Prometheus HTTP API base URL (--metrics-source=prometheus)")
    s.add_argument("--prometheus-window-s", type=float, default=30.0, help="rate() window of the Prometheus queries")
    s.add_argument("--prometheus-triton-job", default="triton", help="the job label of Triton's scrape targets")
    s.add_argument("--http-port", type=int, default=8000, help="Envoy's KServe v2 HTTP listener")
    s.add_argument("--grpc-port", type=int, default=8001, help="Envoy's KServe v2 gRPC listener")
    s.add_argument("--interval-s", type=float, default=1.0)
    s.add_argument("--release-poll-s", type=float, default=0.05,
                   help="how often running releases are observed (the fast rollback path; 0: off)")
    s.add_argument("--listen-address", default="127.0.0.1",
                   help="address of the xDS and admin ports (in a pod: 0.0.0.0; mTLS comes from the mesh)")
    s.add_argument("--lease-file", type=Path, default=None,
                   help="run as one of several control servers sharing --state: the holder of this file's "
                        "lock decides, the others serve the shared record (control/leadership.py)")
    s.add_argument("--identity", default=f"{socket.gethostname()}-{os.getpid()}",
                   help="this server's name in the lease (default: host-pid)")
    s.add_argument("--envoy-listen-address", type=_ip_address, default="127.0.0.1",
                   help="address Envoy's KServe listeners bind (LDS): 127.0.0.1 locally, 0.0.0.0 in a pod")
    s.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    if args.discovery == "runtime-file" and args.runtime is None:
        ap.error("--runtime is required with --discovery=runtime-file")
    if args.metrics_source == "prometheus" and not args.prometheus_url:
        ap.error("--metrics-source=prometheus needs --prometheus-url")
    if (args.state is None) == (args.state_configmap is None):
        ap.error("give exactly one of --state (a file) and --state-configmap")
    if args.lease_file is not None and args.k8s_lease is not None:
        ap.error("give at most one of --lease-file and --k8s-lease")
    if args.mtls_dir is not None:
        try:
            CertDir(args.mtls_dir).check()
        except MtlsConfigError as e:
            ap.error(f"--mtls-dir: {e}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
