"""Release glue of the control server: the candidate replicas as xDS inputs, and the release
metrics (``router_lib.release`` decides; this only translates and counts).

Metrics (on the control server's registry, served at ``/metrics``):

* ``release_candidate_weight_pct{release, model, tier}``: the candidate's share of each tier now;
* ``release_actions_total{release, model, kind}``: start, advance, promote, rollback, pause, ...;
* ``release_rollbacks_total{release, model}``: automatic rollbacks (an alert can fire on its rate);
* ``release_last_rollback_unix_s{release, model}``;
* ``release_decision_to_publish_seconds``: a fast-path decision (a rollback) to its snapshot handed
  to the ADS server (which measures send -> ACK itself: ``xds_push_to_ack_seconds``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router_lib.domain import Fleet
from router_lib.release import ActionKind, ReleaseAction, ReleaseBook, comparator_address
from xds_server.inputs import CandidatePool, Endpoint, MirrorTarget


def candidate_pools(book: ReleaseBook, fleet: Fleet) -> list[CandidatePool]:
    """One ``CandidatePool`` per (release, pool) with candidate replicas, as long as the release
    is in the book (finished ones too: their clusters stay until the release is replaced)."""
    out = []
    for state in book.releases.values():
        by_pool: dict[str, list[Endpoint]] = {}
        for e in state.endpoints:
            by_pool.setdefault(e.pool, []).append(Endpoint(e.host, e.http_port, e.grpc_port))
        for pool_name, endpoints in sorted(by_pool.items()):
            pool = fleet.pool(pool_name)
            out.append(CandidatePool(state.spec.model, pool_name, state.spec.candidate_version,
                                     pool.accelerator.value, pool.emulated, tuple(endpoints)))
    return out


def mirror_targets(book: ReleaseBook) -> list[MirrorTarget]:
    """The shadow comparator of each release that has one (while the release is in the book)."""
    out = []
    for state in book.releases.values():
        if state.comparator:
            address = comparator_address(state.comparator)
            out.append(MirrorTarget(state.spec.model, address.host, address.http_port, address.grpc_port))
    return out


class ReleaseMetrics:
    """A ``ControlLoop.release_listeners`` entry that exports every release action."""

    def __init__(self, registry: CollectorRegistry, book: ReleaseBook | None = None) -> None:
        self.weight = Gauge("release_candidate_weight_pct", "Candidate version's share of a tier's requests, %",
                            ["release", "model", "tier"], registry=registry)
        self.actions = Counter("release_actions", "Release actions taken, by kind",
                               ["release", "model", "kind"], registry=registry)
        self.rollbacks = Counter("release_rollbacks", "Automatic rollbacks of a release (a threshold breached)",
                                 ["release", "model"], registry=registry)
        self.last_rollback = Gauge("release_last_rollback_unix_s", "When the release was last rolled back",
                                   ["release", "model"], registry=registry)
        self.to_publish = Histogram("release_decision_to_publish_seconds",
                                    "Fast-path release decision (a rollback) to its snapshot handed to the ADS server",
                                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
                                     registry=registry)
        for state in (book or ReleaseBook()).releases.values():
            for tier, bp in state.weights_bp().items():
                self.weight.labels(state.spec.name, state.spec.model, tier).set(bp / 100)

    def __call__(self, action: ReleaseAction) -> None:
        model = action.model
        self.actions.labels(action.release, model, action.kind.value).inc()
        for tier, bp in action.weights_bp.items():
            self.weight.labels(action.release, model, tier).set(bp / 100)
        if action.kind == ActionKind.ROLLBACK:
            self.rollbacks.labels(action.release, model).inc()
            self.last_rollback.labels(action.release, model).set(action.at_s)

    def push_observed(self, seconds: float) -> None:
        self.to_publish.observe(seconds)
