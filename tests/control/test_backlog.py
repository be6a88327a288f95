"""Queued work asks for capacity (``router_lib.backlog``): reports checked, kept per source until
they expire, added to what the capacity decider plans for (not to routing's demand), and taken
over the control server's admin HTTP with a clear error for a bad one."""

from __future__ import annotations

import pytest
import requests

from control.admin_http import AdminServer
from control.decide import with_backlog
from control.leadership import NotLeaderError
from router_lib.backlog import BacklogBook, BacklogError, parse_report
from router_lib.routes import RouteKey
from tests.control.test_loop import autoscaled_loop
from tests.router_lib.builders import EMBED, THREE_POOLS, metrics

GOOD = {"source": "job-1", "model": EMBED, "tier": "bronze", "rows_per_s": 40.0}


@pytest.mark.parametrize(("change", "names"), [
    pytest.param({"model": "nope"}, "model 'nope' is served by no pool", id="unknown-model"),
    pytest.param({"tier": "platinum"}, "unknown tier 'platinum'", id="unknown-tier"),
    pytest.param({"rows_per_s": -1}, "'rows_per_s' must be >= 0, got -1", id="negative-rate"),
    pytest.param({"rows_per_s": "fast"}, "'rows_per_s' must be a finite number, got 'fast'", id="rate-not-a-number"),
    pytest.param({"rows_per_s": float("inf")}, "'rows_per_s' must be a finite number", id="rate-infinite"),
    pytest.param({"rows_per_s": True}, "'rows_per_s' must be a finite number, got True", id="rate-bool"),
    pytest.param({"rows_per_s": None}, "missing 'rows_per_s'", id="rate-missing"),
    pytest.param({"ttl_s": 0}, "'ttl_s' must be in (0, 300], got 0", id="ttl-zero"),
    pytest.param({"ttl_s": 3600}, "'ttl_s' must be in (0, 300], got 3600", id="ttl-too-long"),
    pytest.param({"source": ""}, "'source' must be a non-empty string", id="empty-source"),
    pytest.param({"source": "x" * 201}, "'source' is 201 characters long", id="long-source"),
    pytest.param({"rows_waiting": -3}, "'rows_waiting' must be a whole number >= 0, got -3", id="negative-waiting"),
    pytest.param({"extra": 1}, "unknown field(s) ['extra']", id="unknown-field"),
])
def test_a_bad_report_is_refused_naming_the_field(change, names):
    payload = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(BacklogError) as e:
        parse_report(payload, THREE_POOLS, 0.0)
    assert names in str(e.value)


def test_a_report_that_is_not_an_object_is_refused():
    with pytest.raises(BacklogError, match="a backlog report is a JSON object, got list"):
        parse_report([GOOD], THREE_POOLS, 0.0)


def test_the_book_keeps_the_latest_report_per_source_sums_sources_and_drops_expired_ones():
    book = BacklogBook()
    book = book.with_report(parse_report({**GOOD, "ttl_s": 10}, THREE_POOLS, 100.0), 100.0)
    book = book.with_report(parse_report({**GOOD, "rows_per_s": 25.0, "ttl_s": 10}, THREE_POOLS, 101.0), 101.0)
    book = book.with_report(parse_report({**GOOD, "source": "job-2", "rows_per_s": 5.0, "ttl_s": 30},
                                         THREE_POOLS, 102.0), 102.0)
    bronze = RouteKey(EMBED, "bronze")
    assert book.per_route(105.0) == {bronze: 30.0}  # job-1's newer report replaced its older one
    assert book.per_route(111.5) == {bronze: 5.0}  # job-1's expired 10 s after its last report
    assert book.per_route(133.0) == {}
    # a source reporting 0 leaves the book at once
    assert book.with_report(parse_report({**GOOD, "source": "job-2", "rows_per_s": 0}, THREE_POOLS, 106.0),
                            106.0).per_route(106.0) == {bronze: 25.0}


def test_capacity_plans_for_the_demand_plus_the_backlog():
    bronze, gold = RouteKey(EMBED, "bronze"), RouteKey(EMBED, "gold")
    assert with_backlog({bronze: 2.0, gold: 5.0}, {bronze: 40.0}) == {bronze: 42.0, gold: 5.0}
    assert with_backlog({gold: 5.0}, {bronze: 40.0}) == {gold: 5.0, bronze: 40.0}


def test_a_backlog_scales_the_fleet_out_and_its_expiry_lets_it_back_in():
    loop, parts, actuator = autoscaled_loop(cpu=(1, 16), gpu=(0, 16), inf=(0, 16))
    for _ in range(3):
        loop.tick()
        parts["clock"].advance(1.0)
    before = sum(actuator.requests[-1].values())
    loop.report_backlog({**GOOD, "rows_per_s": 2000.0, "ttl_s": 5})
    view = loop.tick()
    during = sum(actuator.requests[-1].values())
    assert during > before, view.decision.capacity.pools
    # routing's own demand is what was measured: the backlog is not traffic
    assert view.decision.demand_per_s.get(RouteKey(EMBED, "bronze"), 0.0) < 100
    parts["clock"].advance(6.0)  # the report was not refreshed: it expired
    assert loop.backlog().per_route(parts["clock"]()) == {}
    for _ in range(4):  # past the scale-down window, the plan for the measured demand alone
        parts["clock"].advance(400.0)
        loop.tick()
    assert sum(actuator.requests[-1].values()) < during


class _Controller:
    def __init__(self, loop, leader: bool = True) -> None:
        self.loop = loop
        self.leader = leader

    def require_leader(self) -> None:
        if not self.leader:
            raise NotLeaderError("me is a follower; the leader is other")


def test_the_admin_http_takes_a_report_and_answers_a_bad_one_with_400_naming_the_problem():
    loop, parts, _ = autoscaled_loop(cpu=(1, 4))
    parts["metrics"].current = metrics({("cpu", EMBED): {"request_rate_per_s": 1.0}})
    server = AdminServer(_Controller(loop))  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{server.start()}/backlog"
    try:
        ok = requests.post(url, json={**GOOD, "rows_waiting": 4000}, timeout=5)
        assert ok.status_code == 200, ok.text
        assert ok.json()["accepted"]["rows_per_s"] == 40.0
        assert loop.backlog().per_route(parts["clock"]()) == {RouteKey(EMBED, "bronze"): 40.0}
        bad = requests.post(url, json={**GOOD, "tier": "platinum"}, timeout=5)
        assert bad.status_code == 400 and "unknown tier 'platinum'" in bad.json()["error"]
        not_json = requests.post(url, data=b"{rows", timeout=5)
        assert not_json.status_code == 400 and "body is not JSON" in not_json.json()["error"]
        assert loop.backlog().per_route(parts["clock"]()) == {RouteKey(EMBED, "bronze"): 40.0}  # nothing accepted lost
    finally:
        server.stop()


def test_a_follower_refuses_a_report_with_409_naming_the_leader():
    loop, _, _ = autoscaled_loop(cpu=(1, 4))
    server = AdminServer(_Controller(loop, leader=False))  # type: ignore[arg-type]
    try:
        answer = requests.post(f"http://127.0.0.1:{server.start()}/backlog", json=GOOD, timeout=5)
        assert answer.status_code == 409 and "the leader is other" in answer.json()["error"]
        assert loop.backlog().reports == {}
    finally:
        server.stop()


def test_make_status_shows_each_backlog_report():
    from local_platform.__main__ import status_table

    text = status_table({"pools": [], "routes": [], "backlog": [
        {"source": "job-7", "model": EMBED, "tier": "bronze", "rows_per_s": 16.0, "rows_waiting": 160,
         "expires_in_s": 12.5}]})
    assert f"backlog job-7: {EMBED}/bronze 160 rows waiting, asks 16 rows/s (expires in 12.5 s" in text
