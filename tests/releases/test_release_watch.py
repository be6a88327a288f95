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
