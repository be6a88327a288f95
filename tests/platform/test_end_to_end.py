"""End to end with real Envoy, real Triton pools and the real control server (its own process).

Requests go through Envoy with unchanged tritonclient clients; where they landed is read from
Envoy's ``x-served-by`` header and counted from Triton's own metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binom
from tritonclient.utils import InferenceServerException

from local_platform.platform import LocalPlatform, PlatformPorts
from tests.fleet_files import fleet_copy
from xds_server.bootstrap import write_proxyless_bootstrap

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def platform(tmp_path_factory, artifacts):
    workdir = tmp_path_factory.mktemp("platform")
    p = LocalPlatform(workdir=workdir, artifacts=artifacts, fleet_path=fleet_copy(workdir, share_tiers=frozenset({"inf2"})),
                      ports=PlatformPorts(http=0, grpc=0), interval_s=0.5, with_prometheus=True)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def digits(n: int = 1) -> np.ndarray:
    data = np.load(ROOT / "build" / "models" / "digits_holdout.npz")
    return data["x"][:n].astype(np.float32)


def rest_body(model: str) -> dict:
    if model == "digits_classifier":
        return {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": digits(1)[0].tolist()}]}
    return {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["route me"]}]}


def grpc_infer(client: grpcclient.InferenceServerClient, model: str, tier: str | None):  # type: ignore[no-untyped-def]
    if model == "digits_classifier":
        inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
        inp.set_data_from_numpy(digits(1))
    else:
        inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"route me"]], dtype=object))
    return client.infer(model, [inp], headers={"x-sla-tier": tier} if tier else {}, client_timeout=30)


def triton_success(platform: LocalPlatform) -> Counter:
    """Successful requests per (pool, public model) from every Triton replica's own metrics."""
    out: Counter = Counter()
    for r in platform.supervisor.replicas():
        text = requests.get(r.metrics_url, timeout=5).text
        for fam in text_string_to_metric_families(text):
            if fam.name == "nv_inference_request_success":
                for s in fam.samples:
                    if s.labels["model"] in ("text_embedding", "digits_classifier"):
                        out[(r.pool, s.labels["model"])] += s.value
    return out


def triton_success_after(platform: LocalPlatform, before: Counter, expected: dict[str, int],
                         timeout_s: float = 5.0) -> Counter:
    """Triton's success counters once they count ``expected`` more requests per model than
    ``before`` (a replica may publish its count a moment after the client has its answer), or as
    they are at the timeout (the caller's assertion then says what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = triton_success(platform)
        done = all(sum(after[(p, m)] - before[(p, m)] for p, mm in after if mm == m) >= n
                   for m, n in expected.items())
        if done or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def weights(platform: LocalPlatform, model: str, tier: str) -> dict[str, int]:
    for r in platform.status()["routes"]:
        if r["model"] == model and r["tier"] == tier:
            return r["weights"]
    raise AssertionError(f"no route for {model}/{tier}")


@pytest.mark.parametrize("model", ["text_embedding", "digits_classifier"])
@pytest.mark.parametrize("tier", ["gold", "silver", "bronze"])
def test_http_requests_land_where_the_weights_say(platform, model, tier):
    """The policy may move weights while the requests run (they are live demand): every request
    must land on a pool that had weight before or after, and Triton's own counts must agree with
    the x-served-by header Envoy sent."""
    w_before = weights(platform, model, tier)
    url = f"http://{platform.describe()['http_endpoint']}/v2/models/{model}/infer"
    served = Counter()
    before = triton_success(platform)
    for _ in range(20):
        r = requests.post(url, json=rest_body(model), headers={"x-sla-tier": tier}, timeout=30)
        assert r.status_code == 200, r.text
        served[r.headers["x-served-by"]] += 1
        pool = platform.fleet.pool(r.headers["x-served-by"])
        assert r.headers["x-emulated"] == str(pool.emulated).lower()
    w_after = weights(platform, model, tier)
    after = triton_success_after(platform, before, {model: 20})
    counted = {pool: after[(pool, model)] - before[(pool, model)] for pool in w_before}
    assert sum(counted.values()) == 20
    assert counted == {pool: served[pool] for pool in w_before}
    allowed = {p for p in w_before if w_before[p] > 0 or w_after.get(p, 0) > 0}
    assert set(served) <= allowed, f"served by {dict(served)} but weights were {w_before} then {w_after}"


@pytest.mark.parametrize("tier", ["gold", "bronze", None])
def test_grpc_clients_are_routed_by_model_without_extra_headers(platform, tier):
    """Weights may move while the requests run (live demand): traffic must land only on pools
    that had weight before or after."""
    client = grpcclient.InferenceServerClient(platform.describe()["grpc_endpoint"])
    effective = tier or platform.fleet.tiers.default_tier
    models = ("digits_classifier", "text_embedding")
    w_before = {m: weights(platform, m, effective) for m in models}
    before = triton_success(platform)
    for _ in range(10):
        assert grpc_infer(client, "digits_classifier", tier).as_numpy("label").shape == (1, 1)
        assert grpc_infer(client, "text_embedding", tier).as_numpy("EMBEDDING").shape == (1, 384)
    after = triton_success_after(platform, before, dict.fromkeys(models, 10))
    for model in models:
        w_after = weights(platform, model, effective)
        landed = {pool: after[(pool, model)] - before[(pool, model)] for pool in w_after}
        assert sum(landed.values()) == 10
        allowed = {p for p in w_after if w_after[p] > 0 or w_before[model].get(p, 0) > 0}
        assert {p for p, n in landed.items() if n} <= allowed, (landed, w_before[model], w_after)


def test_unknown_tier_model_and_malformed_requests_get_clear_errors(platform):
    d = platform.describe()
    base = f"http://{d['http_endpoint']}/v2/models"
    r = requests.post(f"{base}/text_embedding/infer", json=rest_body("text_embedding"), headers={"x-sla-tier": "platinum"}, timeout=10)
    assert r.status_code == 400 and "x-sla-tier" in r.json()["error"]
    r = requests.post(f"{base}/resnet50/infer", json=rest_body("text_embedding"), timeout=10)
    assert r.status_code == 404 and "unknown model" in r.text
    r = requests.post(f"{base}/digits_classifier/infer", data=b"{not json", timeout=10)
    assert "failed to parse the request JSON" in r.json()["error"]  # Triton's own answer (it says 500)
    bad_shape = {"inputs": [{"name": "float_input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    r = requests.post(f"{base}/digits_classifier/infer", json=bad_shape, timeout=10)
    assert r.status_code == 400 and "float_input" in r.json()["error"]
    client = grpcclient.InferenceServerClient(d["grpc_endpoint"])
    with pytest.raises(InferenceServerException) as err:
        grpc_infer(client, "digits_classifier", "platinum")
    assert "INVALID_ARGUMENT" in str(err.value.status()) and "x-sla-tier" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("resnet50", [grpcclient.InferInput("x", [1], "FP32")])
    assert "unknown model" in err.value.message()
    # and other traffic is unaffected
    assert grpc_infer(client, "digits_classifier", "gold").as_numpy("label").shape == (1, 1)
    assert requests.get(f"http://{d['http_endpoint']}/v2/health/ready", timeout=10).status_code == 200
    assert httpclient.InferenceServerClient(d["http_endpoint"]).get_model_metadata("text_embedding")["name"] == "text_embedding"


class Load:
    """Bounded closed-loop gRPC load through Envoy from a few threads; counts every outcome."""

    def __init__(self, endpoint: str, model: str, tier: str, threads: int = 4, max_s: float = 60.0) -> None:
        self.endpoint, self.model, self.tier, self.max_s = endpoint, model, tier, max_s
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        client = grpcclient.InferenceServerClient(self.endpoint)
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                grpc_infer(client, self.model, self.tier)
                with self._lock:
                    self.ok += 1
            except InferenceServerException as e:
                with self._lock:
                    self.failed.append(str(e))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def wait_for_requests(self, n: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        start = self.ok
        while self.ok < start + n:
            assert time.monotonic() < deadline, f"load made no progress ({self.ok - start} of {n})"
            time.sleep(0.05)


def serving_pool(platform: LocalPlatform, model: str, tier: str) -> str:
    w = weights(platform, model, tier)
    return max(w, key=lambda p: w[p])


def test_sigkill_of_a_whole_pool_under_load_fails_no_request(platform):
    pool = serving_pool(platform, "text_embedding", "silver")
    with Load(platform.describe()["grpc_endpoint"], "text_embedding", "silver") as load:
        load.wait_for_requests(20)
        for proc in platform.supervisor.processes(pool):
            proc.kill()
        load.wait_for_requests(100, timeout_s=60)
        # the supervisor brings the pool back; traffic keeps flowing meanwhile
        platform.wait_for(lambda: all(p.ready() for p in platform.supervisor.processes(pool)), 90, f"{pool} restarted")
        load.wait_for_requests(20)
    assert load.failed == [], f"{len(load.failed)} failed of {load.ok + len(load.failed)}: {load.failed[:3]}"
    assert load.ok > 140


def test_sigkill_of_the_control_server_under_load_fails_no_request_and_resumes_persisted_weights(platform):
    with Load(platform.describe()["grpc_endpoint"], "digits_classifier", "gold") as load:
        load.wait_for_requests(20)
        platform.kill_control_server()
        persisted = json.loads(Path(platform.state_path).read_text())
        load.wait_for_requests(50)  # Envoy keeps its last config while the server is away
        platform.start_control_server()
        resumed = platform.status()
        load.wait_for_requests(20)
    assert load.failed == []
    # The republished weights are the persisted ones (the snapshot version can differ only if a
    # replica's endpoints changed while the server was away).
    assert resumed["resumed"]["persisted_version"] == persisted["snapshot_version"]
    assert resumed["resumed"]["routes"] == len(persisted["routes"]) > 0
    assert {(r["model"], r["tier"]): r["weights"] for r in resumed["resumed"]["weights"]} == \
           {(r["model"], r["tier"]): r["weights"] for r in persisted["routes"]}
    platform.wait_for(platform._envoy_acked, 10, "Envoy reconnected to the restarted server and ACKed")


def test_a_queue_on_the_cheap_pool_moves_gold_traffic_off_it_within_2s(platform):
    cheap = serving_pool(platform, "text_embedding", "gold")
    replica = platform.supervisor.replicas(cheap)[0]
    # Build a queue on the cheap pool directly (not through Envoy): many concurrent requests.
    stop = threading.Event()

    def hammer() -> None:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{replica.grpc_port}")
        # Full batches: each request fills an instance, so the rest wait in Triton's queue.
        inp = grpcclient.InferInput("TEXT", [32, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"a queue builds up on the cheap pool"]] * 32, dtype=object))
        while not stop.is_set():
            try:
                client.infer("text_embedding", [inp], client_timeout=30)
            except InferenceServerException:
                pass

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(24)]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        platform.wait_for(lambda: weights(platform, "text_embedding", "gold")[cheap] < 100, 10,
                          f"gold text_embedding weight on {cheap} to drop")
        moved_after_s = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    reasons = next(r["reasons"] for r in platform.status()["routes"] if r["model"] == "text_embedding" and r["tier"] == "gold")
    assert moved_after_s <= 2.0, f"took {moved_after_s:.2f}s; reasons: {reasons}"


# A proxyless client in its own process: GRPC_XDS_BOOTSTRAP is read once per process.
PROXYLESS_CLIENT = """
import sys, numpy as np, tritonclient.grpc as g
n, tier = int(sys.argv[1]), sys.argv[2]
c = g.InferenceServerClient('xds:///digits_classifier')
i = g.InferInput('float_input', [1, 64], 'FP32'); i.set_data_from_numpy(np.zeros((1, 64), np.float32))
h = {'x-sla-tier': tier} if tier else {}
print(sum(int(c.infer('digits_classifier', [i], headers=h).as_numpy('label').shape == (1, 1)) for _ in range(n)))
"""
PROXYLESS_REQUESTS = 100
# Chance that one pool's count falls outside its binomial range although the client follows the
# weights: with 100 requests, a 50/50 split accepts 26..74 per pool, 100/0 accepts exactly 100/0.
SPLIT_FALSE_FAILURE = 1e-6


def route_decisions(platform: LocalPlatform, model: str, tier: str) -> float:
    """router_decisions_total of one route (control server /metrics): it counts the decisions that
    changed the route's weights, so an unchanged count brackets a span in which they held still."""
    text = requests.get(f"{platform.describe()['control_admin']}/metrics", timeout=5).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "router_decisions_total" and s.labels.get("model") == model and s.labels.get("tier") == tier:
                return s.value
    return 0.0


def wait_route_still(platform: LocalPlatform, model: str, tier: str, still_s: float = 2.0,
                     timeout_s: float = 20.0) -> None:
    """Until the route's decisions count has not moved for ``still_s`` (a route stepping towards a
    new target moves one step per tick; a run started mid-way cannot be judged), or the timeout."""
    deadline = time.monotonic() + timeout_s
    last, since = route_decisions(platform, model, tier), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = route_decisions(platform, model, tier)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return


def weighted_count_range(requests_sent: int, weight: int, total_weight: int) -> tuple[int, int]:
    """Counts a pool may get when each request picks a pool at random by weight (gRPC's weighted
    clusters do, per RPC): the binomial range outside which a count has SPLIT_FALSE_FAILURE chance."""
    low, high = binom.interval(1 - SPLIT_FALSE_FAILURE, requests_sent, weight / total_weight)
    return int(low), int(high)


@pytest.mark.parametrize("tier", ["gold", "bronze", None])
def test_proxyless_grpc_client_routes_by_the_same_weights(platform, tmp_path, tier):
    """A client dialling ``xds:///digits_classifier`` (no Envoy) splits its requests by the weights
    the control server publishes for its tier (no header: the default tier): each pool's share,
    counted from Triton's own metrics, lies in the binomial range of its weight, so a pool at 0 gets
    none and a pool at 100 gets all.

    The policy may move weights while the requests run (live demand).  A run is judged only if its
    route held still: the same weights before and after and no route decision in between
    (router_decisions_total unchanged).  A run whose route moved must still have served every
    request; it is repeated, up to five runs in all, each after the route held still for 2 s (one
    make test run saw the route step 75 -> 50 -> 25 -> 0 across three back-to-back runs)."""
    model, effective = "digits_classifier", tier or platform.fleet.tiers.default_tier
    bootstrap = write_proxyless_bootstrap(tmp_path / "xds-bootstrap.json", node_id="proxyless-test",
                                          xds_port=platform.ports.xds)
    moved = []
    for _ in range(5):
        wait_route_still(platform, model, effective)
        decided_before = route_decisions(platform, model, effective)
        w_before = weights(platform, model, effective)
        before = triton_success(platform)
        out = subprocess.run([sys.executable, "-c", PROXYLESS_CLIENT, str(PROXYLESS_REQUESTS), tier or ""],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, GRPC_XDS_BOOTSTRAP=str(bootstrap)))
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == str(PROXYLESS_REQUESTS)
        after = triton_success(platform)
        w_after = weights(platform, model, effective)
        landed = {pool: after[(pool, m)] - before[(pool, m)] for pool, m in after if m == model}
        assert sum(landed.values()) == PROXYLESS_REQUESTS, landed
        if w_before == w_after and route_decisions(platform, model, effective) == decided_before:
            break
        moved.append((w_before, w_after))
    else:
        pytest.fail(f"{model}/{effective} weights moved during each of 5 runs, the split was never judged: {moved}")
    total = sum(w_before.values())
    assert total > 0, f"{model}/{effective} has no weight on any pool: {w_before}"
    ranges = {pool: weighted_count_range(PROXYLESS_REQUESTS, w_before.get(pool, 0), total)
              for pool in set(w_before) | set(landed)}
    outside = {pool: (landed.get(pool, 0), ranges[pool]) for pool in ranges
               if not ranges[pool][0] <= landed.get(pool, 0) <= ranges[pool][1]}
    assert not outside, (f"{model}/{effective}: weights {w_before}, requests per pool {landed}; "
                         f"outside their range (count, range): {outside}")


def _metrics_pages(platform: LocalPlatform) -> list[str]:
    d = platform.describe()
    return ([r.metrics_url for r in platform.supervisor.replicas()]
            + [f"{d['control_admin']}/metrics", f"{d['envoy_admin']}/stats/prometheus"])


def served_metric_names(platform: LocalPlatform) -> set[str]:
    """Every series name on the running platform's /metrics pages (Triton replicas, control server,
    Envoy), after a request on every tier: Envoy creates per-tier virtual-cluster series on first use."""
    from dashboards.promql_names import names_on_metrics_page

    url = f"http://{platform.describe()['http_endpoint']}/v2/models/digits_classifier/infer"
    for tier in ("gold", "silver", "bronze"):
        assert requests.post(url, json=rest_body("digits_classifier"), headers={"x-sla-tier": tier}, timeout=30).ok
    served: set[str] = set()
    for page in _metrics_pages(platform):
        served |= names_on_metrics_page(requests.get(page, timeout=10).text)
    return served


def test_dashboards_and_alerts_read_only_metrics_the_running_platform_serves(platform):
    """Every metric a dashboard panel or an alert rule queries is served by the running platform or
    is a recording rule of alerts/rules.yaml (or Prometheus' own ``up``).  This is the live check
    the offline tests/deploy/test_dashboards.py relies on: there the names are only checked against
    the list in router_lib/metric_names.py."""
    from dashboards.definitions import DASHBOARDS
    from dashboards.promql_names import metric_names_in, recording_rule_names
    from router_lib import metric_names

    served = served_metric_names(platform)
    queried = {n for d in DASHBOARDS.values() for p in d.panels for q in p.queries for n in metric_names_in(q.expr)}
    rules = yaml.safe_load((ROOT / "alerts" / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            queried |= metric_names_in(rule["expr"])
    # batch workers serve the batch dashboard's names (checked live in tests/batch/test_end_to_end.py)
    missing = queried - served - recording_rule_names() - {"up"} - set(metric_names.BATCH)
    assert not missing, f"queried but not served by the running platform: {sorted(missing)}"


def test_the_metric_contract_and_the_fake_exporter_name_only_metrics_the_running_platform_serves(platform):
    """Every name in router_lib/metric_names.py, and every name tests/deploy/fake_exporter.py serves
    (it stands in for the platform when the dashboard PNG renderer is tested), is served by the
    running platform.  Both are written from that list, so only the real platform can show them wrong."""
    from dashboards.promql_names import names_on_metrics_page
    from router_lib import metric_names
    from tests.deploy.fake_exporter import exposition

    served = served_metric_names(platform)
    contract = {*metric_names.CONTROL_PLANE, *metric_names.EMULATION, *metric_names.TRITON_READ,
                *metric_names.ENVOY_READ}
    assert not contract - served, f"in router_lib/metric_names.py, not served: {sorted(contract - served)}"
    faked = names_on_metrics_page(exposition(10.0)) - set(metric_names.BATCH)  # a worker's
    assert not faked - served, f"served by the fake exporter, not by the platform: {sorted(faked - served)}"


def test_prometheus_scrapes_every_part_of_the_platform_with_pool_labels(platform):
    prom = platform.describe()["prometheus"]

    def query(expr: str) -> list[dict]:
        return requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]

    platform.wait_for(lambda: {r["metric"]["job"] for r in query("up == 1")} >= {"triton", "xds-control", "envoy"},
                      30, "every job up in Prometheus")
    # every Triton target carries its pool label (a replica restarted by an earlier test may not
    # have served a request yet, so its request counters need not exist)
    expected = {p.name for p in platform.fleet.pools}
    platform.wait_for(lambda: {r["metric"]["pool"] for r in query('up{job="triton"} == 1')} == expected, 30,
                      f"a Triton target up for every pool {sorted(expected)} (a replica restarted by an earlier "
                      "test comes back on the next scrapes)")
    emulated = {r["metric"]["pool"]: r["metric"]["emulated"] for r in query("router_pool_healthy")}
    assert emulated == {p.name: str(p.emulated).lower() for p in platform.fleet.pools}


def test_a_pool_marked_share_tiers_queues_by_tier_and_the_edge_writes_each_tiers_level(platform):
    """The inf2 pool is marked ``share_tiers: true`` (the module's fleet file): its model configs declare one priority
    level per tier (gold first) and the edge writes each request's level (docs/overload.md)."""
    from router_lib.priority import tier_priorities

    assert [p.name for p in platform.fleet.pools if p.share_tiers] == ["inf2"]
    levels = tier_priorities(platform.fleet.tiers).by_tier()
    (replica,) = [r for r in platform.supervisor.replicas() if r.pool == "inf2"]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{replica.http_port}")
    config = client.get_model_config("text_embedding_onnx")  # the accelerated step
    batching = config["dynamic_batching"]
    # the tiers' levels, then one whose requests expire at once: the batcher wake-up (fleet.batcher_wake)
    assert int(batching["priority_levels"]) == len(levels) + 1
    assert config["parameters"]["batcher_wake_level"]["string_value"] == str(len(levels) + 1)
    (process,) = [p for p in platform.supervisor.processes("inf2")]
    assert process.waker is not None and process.waker.running
    assert [t.model for t in process.waker.targets] == ["text_embedding_onnx"]
    assert int(batching["default_priority_level"]) == levels[platform.fleet.tiers.default_tier]
    # the host step stays one FIFO queue (TierSharing.host_steps: measured stalls with levels there)
    assert int(client.get_model_config("text_embedding_tokenizer")["dynamic_batching"].get("priority_levels", 0)) == 0
    for pool in ("cpu", "gpu"):  # not marked: one FIFO queue per model, as before
        (other,) = [r for r in platform.supervisor.replicas() if r.pool == pool]
        config = httpclient.InferenceServerClient(f"127.0.0.1:{other.http_port}").get_model_config("digits_classifier")
        assert int(config["dynamic_batching"].get("priority_levels", 0)) == 0, pool
    dataplane = platform.describe()
    listeners = requests.get(f"{dataplane['envoy_admin']}/config_dump?resource=dynamic_listeners",
                             timeout=10).text
    assert "tmas.overload_admission" in listeners  # the edge writes the level from the tier
    url = f"http://{dataplane['http_endpoint']}/v2/models/text_embedding/infer"
    for tier in levels:  # every tier is still served through the edge that now rewrites bodies
        r = requests.post(url, json=rest_body("text_embedding"), headers={"x-sla-tier": tier}, timeout=30)
        assert r.status_code == 200, r.text
