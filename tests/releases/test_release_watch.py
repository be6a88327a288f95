"""The release watcher with fake fetches and an injected clock: it samples Envoy and the Triton
replicas of a running release, and a slow candidate is rolled back through the loop's fast path."""

from __future__ import annotations

from control.release_watch import ReleaseWatch, envoy_admin_base
from router_lib.release_spec import parse_release_spec
from tests.control.fakes import Clock
from tests.releases.test_release_loop import ENDPOINTS, SPEC, make_loop
from tests.releases.test_release_observe import triton_text
from tests.router_lib.builders import EMBED


class FakeWeb:
    """Counters that grow as the test says; answers what the watcher asks, by URL."""

    def __init__(self) -> None:
        self.stable = self.candidate = 0.0
        self.candidate_ms = 2.0
        self.candidate_us = 0.0
        self.urls: list[str] = []

    def grow(self, stable: float, candidate: float, candidate_ms: float) -> None:
        self.stable += stable
        self.candidate += candidate
        self.candidate_us += candidate * candidate_ms * 1000

    def __call__(self, url: str, timeout_s: float) -> str:
        self.urls.append(url)
        if "/stats/prometheus" in url:
            return ("# TYPE envoy_cluster_upstream_rq_total counter\n"
                    f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{EMBED}--cpu--http"}} {self.stable}\n'
                    f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{EMBED}--cpu--http--v2"}} {self.candidate}\n')
        if ":9502/" in url:  # the candidate replica
            return triton_text(self.candidate, self.candidate_us, "2").replace("digits_classifier", EMBED)
        return triton_text(self.stable / 2, self.stable / 2 * 2000).replace("digits_classifier", EMBED)


def test_the_watcher_rolls_a_slow_candidate_back_within_its_fast_window() -> None:
    loop, sink, _, _ = make_loop()
    loop.tick()
    loop.start_release(parse_release_spec(SPEC), ENDPOINTS)
    web, clock = FakeWeb(), Clock(1.7e9)
    watch = ReleaseWatch(loop, envoy_admin_base("http://127.0.0.1:9901/stats/prometheus?filter=x"),
                         fetch=web, clock=clock)
    for _ in range(10):  # a healthy second: 20 candidate requests at 2 ms
        web.grow(40, 2, 2.0)
        assert watch.poll() == []
        clock.advance(0.1)
    assert any("127.0.0.1:9901/stats/prometheus" in u for u in web.urls)
    assert any(":9502/metrics" in u for u in web.urls)  # the candidate's own Triton
    assert loop.view.releases.releases["emb-v2"].phase.value == "running"
    actions = []
    for _ in range(5):  # the candidate turns slow
        web.grow(40, 4, 150.0)
        actions += watch.poll()
        clock.advance(0.05)
    assert [a.kind.value for a in actions] == ["rollback"]
    assert "mean latency on cpu" in actions[0].text and sink.candidate_share("bronze") == 0


def two_servers(tmp_path):  # type: ignore[no-untyped-def]
    """Two control servers sharing one record and one file lease; a leads, b follows."""
    from control.leadership import ElectedLoop, FileLease
    from tests.control.fakes import MemoryStore

    store = MemoryStore()
    servers = []
    for name in ("a", "b"):
        loop, sink, _, _ = make_loop(store)
        elected = ElectedLoop(loop, FileLease(tmp_path / "lease", name))
        web, clock = FakeWeb(), Clock(1.7e9)
        watch = ReleaseWatch(loop, "http://127.0.0.1:9901", fetch=web, clock=clock,
                             leader=lambda elected=elected: elected.leader)
        servers.append((elected, sink, web, clock, watch))
    servers[0][0].tick()
    servers[1][0].tick()
    assert servers[0][0].leader and not servers[1][0].leader
    servers[0][0].loop.start_release(parse_release_spec(SPEC), ENDPOINTS)
    servers[1][0].tick()  # b follows the record: it knows the release too
    assert "emb-v2" in servers[1][0].loop.view.releases.releases
    return servers


def slow_second(servers) -> list:  # type: ignore[no-untyped-def]
    """A healthy second, then the candidate turns slow; every server's watcher polls."""
    actions: dict[str, list] = {"a": [], "b": []}
    for step in range(15):
        for name, (_, _, web, clock, watch) in zip("ab", servers, strict=True):
            web.grow(40, 4, 150.0 if step >= 10 else 2.0)
            actions[name] += watch.poll()
            clock.advance(0.1 if step < 10 else 0.05)
    return [actions["a"], actions["b"]]


def test_only_the_leaders_watcher_observes_and_rolls_back(tmp_path) -> None:
    servers = two_servers(tmp_path)
    a_actions, b_actions = slow_second(servers)
    assert [x.kind.value for x in a_actions] == ["rollback"]
    assert b_actions == [] and servers[1][2].urls == []  # the follower fetched nothing, decided nothing
    assert servers[0][1].candidate_share("bronze") == 0
    servers[1][0].tick()  # the follower republishes the leader's record: rolled back there too
    assert servers[1][0].loop.view.releases.releases["emb-v2"].phase.value == "rolled_back"


def test_after_a_failover_the_new_leaders_watcher_takes_over(tmp_path) -> None:
    servers = two_servers(tmp_path)
    servers[0][0].lease.release()  # a's lease drops (as when it dies); b takes it at its next tick
    servers[1][0].tick()
    servers[0][0].tick()  # a sees b lead: it follows
    assert servers[1][0].leader and not servers[0][0].leader
    a_actions, b_actions = slow_second(servers)
    assert a_actions == [] and [x.kind.value for x in b_actions] == ["rollback"]
    assert servers[1][1].candidate_share("bronze") == 0
