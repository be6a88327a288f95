"""The local platform supervises its control server and stops in order (issue 16, item 4).

Real Triton pools (fleet.demo.yaml: one real CPU pool, two emulated with synthetic outputs), real
Envoy, the real control server as its own process.  Two platforms, about 40 s in all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from fleet.restarts import read_events, read_processes
from fleet.supervisor import wait_until
from local_platform.platform import LocalPlatform, PlatformPorts

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "fleet.demo.yaml"


def envoy_endpoints(platform: LocalPlatform) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{platform.ports.envoy_admin}/clusters", timeout=5) as r:  # noqa: S310
        return r.read().decode()


def ready_ports(platform: LocalPlatform, pool: str) -> set[int]:
    for p in platform.status()["pools"]:
        if p["name"] == pool:
            return {r["http_port"] for r in p["replicas"] if r["alive"]}
    raise AssertionError(f"no pool {pool} in /status")


def test_a_sigkilled_control_server_is_restarted_resumes_its_weights_and_publishes_a_later_replica(tmp_path, artifacts):
    platform = LocalPlatform(fleet_path=FLEET, workdir=tmp_path / "run", artifacts=artifacts,
                             ports=PlatformPorts(http=0, grpc=0), interval_s=0.5)
    platform.start()
    try:
        persisted = json.loads(Path(platform.state_path).read_text())
        crashed = platform.control.pid
        os.kill(crashed, signal.SIGKILL)  # a crash, not platform.kill_control_server() (a deliberate stop)
        wait_until(lambda: (r := platform.lifecycle.record("control-server")) is not None and r.restarts == 1
                   and r.state == "running", 30, "the control server's restart")
        assert platform.control.pid != crashed
        resumed = platform.status()["resumed"]
        assert resumed["persisted_version"] == persisted["snapshot_version"]
        assert {(r["model"], r["tier"]): r["weights"] for r in resumed["weights"]} == \
               {(r["model"], r["tier"]): r["weights"] for r in persisted["routes"]}
        wait_until(platform._envoy_acked, 15, "Envoy reconnected to the restarted server and ACKed")

        # A replica that starts after the restart is published to Envoy by the new server.
        before = ready_ports(platform, "gpu")
        platform.supervisor.scale("gpu", 2)
        new = {r.http_port for r in platform.supervisor.replicas("gpu")} - before
        assert len(new) == 1
        wait_until(lambda: new <= ready_ports(platform, "gpu"), 60, "the new replica in the server's /status")
        grpc_port = next(r.grpc_port for r in platform.supervisor.replicas("gpu") if r.http_port in new)
        wait_until(lambda: f"127.0.0.1:{grpc_port}" in envoy_endpoints(platform) and platform._envoy_acked(), 30,
                   "the new replica in Envoy's endpoints")

        # make status says what died and that it came back
        shown = subprocess.run([sys.executable, "-m", "local_platform", "status", "--workdir", str(platform.workdir)],
                               capture_output=True, text=True, timeout=30, cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert shown.returncode == 0, shown.stderr
        line = next(ln for ln in shown.stdout.splitlines() if ln.startswith("control-server"))
        assert "killed by SIGKILL" in line and "back" in line and line.split()[4] == "1", line
    finally:
        platform.stop()
    record = {p["name"]: p for p in read_processes(platform.workdir)}["control-server"]
    assert (record["restarts"], record["last_exit"], record["state"]) == (1, "killed by SIGKILL", "stopped")


def test_ctrl_c_to_the_process_group_of_make_up_drains_every_pool_then_stops_envoy_then_the_control_server(tmp_path, artifacts):
    workdir = tmp_path / "run"
    out = tmp_path / "up.out"
    with open(out, "wb") as f:
        up = subprocess.Popen([sys.executable, "-m", "local_platform", "up", "--fleet", str(FLEET), "--workdir",
                               str(workdir), "--artifacts", str(artifacts), "--http-port", "0", "--grpc-port", "0",
                               "--no-prometheus", "--mtls-dir", str(tmp_path / "certs")],  # up's default: mTLS on
                              stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        wait_until(lambda: "serving until Ctrl-C" in out.read_text() or up.poll() is not None, 120, "`up` serving")
        assert up.poll() is None, out.read_text()
        children = {p["name"]: p["pid"] for p in read_processes(workdir)}
        os.killpg(up.pid, signal.SIGINT)  # what the terminal does: the whole foreground process group
        assert up.wait(timeout=90) == 0, out.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
    text = out.read_text()
    events = [(e["name"], e["event"]) for e in read_events(workdir)]
    at = {ev: i for i, ev in enumerate(events)}  # last index of each (name, event)
    pools = ["cpu", "gpu", "inf2"]
    assert all((p, "drained") in at for p in pools), events
    assert max(at[(p, "stopped")] for p in pools) < at[("envoy", "stopping")] < at[("envoy", "stopped")] \
        < at[("control-server", "stopping")] < at[("control-server", "stopped")], events
    assert not any(ev in ("died", "hung", "drain-failed") for _, ev in events), events
    stopped = {e["name"]: e["detail"] for e in read_events(workdir) if e["event"] == "stopped"}
    assert stopped["envoy"] == stopped["control-server"] == "clean exit"
    shutdown = text.split("serving until Ctrl-C", 1)[1].lower()  # what the terminal shows from Ctrl-C on
    assert "sigint: draining every pool" in shutdown
    for word in ("warning", "error", "traceback", "failed", "exception"):
        assert word not in shutdown, text
    for name, pid in children.items():  # nothing left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
            raise AssertionError(f"{name} (pid {pid}) still runs")  # pragma: no cover
