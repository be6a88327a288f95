"""The release watcher: observes every running release many times a second and hands each
observation to the loop's fast path (``ControlLoop.releases_observed``).

Why not the control tick: a tick is 1 s and scrapes every replica; a rollback within a second of a
fault needs detection faster than that.  The watcher reads only what releases are judged on (the
model's clusters in Envoy, the stable and candidate replicas of the release's pools, the shadow
comparator when there is one), every ``interval_s`` (50 ms by default), outside every lock, and the
decision is the same pure ``step_release`` as everywhere else.  It only acts when a release does
(a rollback publishes at once); otherwise it only refreshes the release's "holding" note.

With several control servers (``control.leadership``) only the leader's watcher observes and acts
(``leader``, asked before every poll): a follower's decision would fork the shared record, and
two watchers would push two rollbacks.  A follower keeps no samples, so a new leader judges on
windows it measured itself, never on a gap spanning the takeover.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from control.http_fetch import FETCH_ERRORS, Fetch, http_get_text
from control.loop import ControlLoop
from router_lib.release import ReleaseAction, ReleaseObservation, ReleaseState, comparator_address
from router_lib.release_observe import (
    CANDIDATE,
    STABLE,
    ReleaseSample,
    combine,
    observe,
    parse_envoy_release,
    parse_triton_model,
)

log = logging.getLogger(__name__)


def envoy_admin_base(metrics_url: str | None) -> str | None:
    """``http://host:port`` of Envoy's admin from its ``/stats/prometheus`` URL."""
    if not metrics_url:
        return None
    parts = urlsplit(metrics_url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class _History:
    samples: deque[ReleaseSample] = field(default_factory=lambda: deque(maxlen=2000))


class ReleaseWatch:
    """``envoy_admin_url``: Envoy's admin base (``http://127.0.0.1:9901``).  ``comparator_url``:
    the shadow comparator's ``/metrics`` (agreement counters), when shadow mode runs.
    ``slow_window_s``: the shortest p95/p99 window (Envoy merges its histograms at each admin query,
    ``xds_server.bootstrap``, so 2 s of live traffic; with Envoy's default 5 s flush it would
    have to be ~10 s).  ``history_s``: how far back a quiet candidate's fast window, or a quantile
    window short of requests (``quantile_min_requests``), may reach."""

    def __init__(self, loop: ControlLoop, envoy_admin_url: str | None, *, interval_s: float = 0.05,
                 fast_window_s: float = 0.5, slow_window_s: float = 2.0, history_s: float = 30.0,
                 fetch: Fetch = http_get_text,
                 timeout_s: float = 0.5, clock: Callable[[], float] = time.time,
                 comparator_urls: dict[str, str] | None = None, leader: Callable[[], bool] | None = None) -> None:
        self.loop = loop
        self.leader = leader  # None: a single control server, always the one that decides
        self.following = False
        self.envoy_admin_url = envoy_admin_url.rstrip("/") if envoy_admin_url else None
        self.interval_s = interval_s
        self.fast_window_s = fast_window_s
        self.slow_window_s = slow_window_s
        # samples kept: the quantile window, or longer for a quiet candidate's fast window (which
        # reaches back until it holds min_judge_requests candidate requests)
        self.history_s = max(history_s, slow_window_s)
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.clock = clock
        self.comparator_urls = dict(comparator_urls or {})  # release name -> comparator /metrics
        self.last_errors: dict[str, str] = {}
        self.last_observations: dict[str, ReleaseObservation] = {}
        self._history: dict[str, _History] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one poll ------------------------------------------------------------------------------
    def _get(self, url: str) -> str | None:
        try:
            return self.fetch(url, self.timeout_s)
        except FETCH_ERRORS as e:
            self.last_errors[url] = f"{type(e).__name__}: {e}"
            return None

    def sample(self, state: ReleaseState, now_s: float) -> ReleaseSample | None:
        spec = state.spec
        envoy = {}
        if self.envoy_admin_url:
            # only what a release is judged on: Envoy renders (and we parse) a few lines per cluster
            regex = quote(f"^cluster\\.{re.escape(spec.model)}--.*\\.upstream_rq_(total|5xx|time)$")
            text = self._get(f"{self.envoy_admin_url}/stats/prometheus?usedonly&filter={regex}")
            if text is None:
                return None
            envoy = parse_envoy_release(text, spec.model, spec.candidate_version)
        pools = {e.pool for e in state.endpoints}
        triton = []
        for pool in sorted(pools):
            for replica in self.loop.view.replicas.serving(pool):
                text = self._get(replica.metrics_url)
                if text is not None:
                    triton.append((pool, STABLE, parse_triton_model(text, spec.model)))
        for e in state.endpoints:
            if e.metrics_url:
                text = self._get(e.metrics_url)
                if text is not None:
                    triton.append((e.pool, CANDIDATE, parse_triton_model(text, spec.model, spec.candidate_version)))
        agreement_sum = agreement_count = 0.0
        comparator = self.comparator_urls.get(spec.name) or (
            comparator_address(state.comparator).metrics_url if state.comparator else None)
        if comparator:
            text = self._get(comparator)
            if text is not None:
                for line in text.splitlines():
                    if line.startswith("release_agreement_score_sum"):
                        agreement_sum = float(line.rsplit(" ", 1)[1])
                    elif line.startswith("release_agreement_score_count"):
                        agreement_count = float(line.rsplit(" ", 1)[1])
        return ReleaseSample(now_s, combine(envoy, triton), agreement_sum, agreement_count)

    def poll(self) -> list[ReleaseAction]:
        """Sample every running release once and let the loop decide.  -> actions taken.  On a
        follower (``leader`` says no): nothing is fetched, the samples are dropped, nothing is decided."""
        if self.leader is not None and not self.leader():
            if not self.following:
                log.info("release watch: following (the leader watches the releases)")
            self.following = True
            self._history.clear()
            self.last_observations = {}
            return []
        if self.following:
            log.info("release watch: leading, watching the releases")
            self.following = False
        running = {n: s for n, s in self.loop.view.releases.releases.items() if not s.phase.finished}
        for gone in set(self._history) - set(running):
            del self._history[gone]
        observations = {}
        for name, state in running.items():
            sample = self.sample(state, self.clock())
            if sample is None:
                continue
            history = self._history.setdefault(name, _History())
            history.samples.append(sample)
            while len(history.samples) > 2 and history.samples[1].at_s < sample.at_s - self.history_s:
                history.samples.popleft()
            obs = observe(list(history.samples), sorted({e.pool for e in state.endpoints}),
                          fast_window_s=self.fast_window_s, slow_window_s=self.slow_window_s,
                          min_requests=state.spec.thresholds.min_judge_requests)
            if obs is not None:
                observations[name] = obs
        self.last_observations = observations
        return self.loop.releases_observed(observations) if observations else []

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> ReleaseWatch:
        self._thread = threading.Thread(target=self._run, name="release-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # one bad poll must not end the watch
                log.exception("release watch poll failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
