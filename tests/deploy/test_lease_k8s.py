"""The cluster's leader lease and shared record (control/lease_k8s.py) with the real ``kubernetes``
client against a local API server that keeps Leases and ConfigMaps with resourceVersion
concurrency (fake_apiserver.py).  Clocks are injected: lease expiry is tested without sleeping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control.lease_k8s import RECORD_KEY, ConfigMapStateStore, KubernetesLease, cluster_apis
from tests.deploy.fake_apiserver import FakeApiServer


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lease(server: FakeApiServer, identity: str, clock: Clock, api=None) -> KubernetesLease:
    coordination, _ = cluster_apis(host=server.url)
    return KubernetesLease(api or coordination, namespace="inference", name="xds-control", identity=identity,
                           duration_s=10, clock=clock)


def stored_spec(server: FakeApiServer) -> dict:
    return server.objects[("leases", "inference", "xds-control")]["spec"]


def test_exactly_one_of_two_servers_leads_and_the_other_knows_who(apiserver):
    clock = Clock()
    a, b = lease(apiserver, "a", clock), lease(apiserver, "b", clock)
    assert a.hold() is True
    assert b.hold() is False and b.holder() == "a"
    clock.now += 5
    assert a.hold() is True and b.hold() is False  # renewed: still a's
    assert stored_spec(apiserver)["holderIdentity"] == "a"
    assert stored_spec(apiserver)["renewTime"].endswith("Z")


def test_a_lease_not_renewed_for_its_duration_is_taken_over(apiserver):
    clock = Clock()
    a, b = lease(apiserver, "a", clock), lease(apiserver, "b", clock)
    assert a.hold()
    clock.now += 9.9
    assert b.hold() is False, "not expired yet"
    clock.now += 0.2
    assert b.hold() is True
    assert stored_spec(apiserver)["holderIdentity"] == "b" and stored_spec(apiserver)["leaseTransitions"] == 1
    assert a.hold() is False and a.holder() == "b", "the old leader sees it lost"


def test_of_two_servers_racing_for_an_expired_lease_only_one_wins(apiserver):
    clock = Clock()
    assert lease(apiserver, "old", clock).hold()
    clock.now += 60
    b = lease(apiserver, "b", clock)
    coordination, _ = cluster_apis(host=apiserver.url)

    class ReadThenLoseTheRace:
        """a's API: b takes the lease between a's read and a's replace (a real interleaving)."""

        def read_namespaced_lease(self, *args, **kwargs):
            response = coordination.read_namespaced_lease(*args, **kwargs)
            assert b.hold() is True
            return response

        def __getattr__(self, name):
            return getattr(coordination, name)

    a = lease(apiserver, "a", clock, api=ReadThenLoseTheRace())
    assert a.hold() is False, "a's replace carried a stale resourceVersion: 409, b leads"
    assert stored_spec(apiserver)["holderIdentity"] == "b"
    assert any(r.startswith("PUT") for r in apiserver.requests)


def test_a_leader_cut_off_from_the_api_stops_leading_before_anyone_may_take_over(apiserver):
    clock = Clock()
    a = lease(apiserver, "a", clock)
    assert a.hold()
    apiserver.unavailable = True
    clock.now += 6
    assert a.hold() is True and a.last_error, "within two thirds of the duration it still leads"
    clock.now += 1
    assert a.hold() is False, "6.7 s without renewal: it stops deciding (others may take over at 10 s)"


def test_a_released_lease_is_taken_at_once(apiserver):
    clock = Clock()
    a, b = lease(apiserver, "a", clock), lease(apiserver, "b", clock)
    assert a.hold()
    a.release()
    assert b.hold() is True


def test_the_record_round_trips_through_a_configmap(apiserver):
    _, core = cluster_apis(host=apiserver.url)
    store = ConfigMapStateStore(core, namespace="inference", name="xds-control-state")
    assert store.load() is None
    store.save({"version": 1, "routes": []})
    store.save({"version": 2, "routes": [{"model": "m"}]})
    assert store.load() == {"version": 2, "routes": [{"model": "m"}]}
    apiserver.objects[("configmaps", "inference", "xds-control-state")]["data"][RECORD_KEY] = "{not json"
    with pytest.raises(ValueError, match="xds-control-state key record.json: not JSON"):
        store.load()
    apiserver.unavailable = True
    with pytest.raises(OSError, match="API 503"):
        store.save({"version": 3})


def test_a_lease_shorter_than_a_few_ticks_is_refused(apiserver):
    with pytest.raises(ValueError, match="at least 3 s"):
        KubernetesLease(None, namespace="n", name="l", identity="a", duration_s=1)
