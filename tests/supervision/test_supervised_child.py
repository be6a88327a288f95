"""``SupervisedChild`` against a real child process (a tiny HTTP server): a crash is restarted,
a hang (SIGSTOP) is detected by the liveness probe and restarted, a crash loop backs off, and a
deliberate kill or stop is not undone.  Seconds in all; no Triton or Envoy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from fleet.restarts import BackoffPolicy, Lifecycle
from fleet.supervisor import wait_until
from local_platform.supervised import SupervisedChild
from localnet.ports import free_port

SERVER = "import http.server,sys; http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as r:  # noqa: S310 - loopback
            return r.status == 200
    except OSError:
        return False


def child(tmp_path, port: int, life: Lifecycle, *, command: list[str] | None = None, **kw) -> SupervisedChild:  # type: ignore[no-untyped-def]
    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command or [sys.executable, "-c", SERVER, str(port)], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ready(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}")
            return answers(port)
        wait_until(up, timeout_s, "the child's HTTP port")

    kw.setdefault("backoff", BackoffPolicy(initial_s=0.2, max_s=1.0))
    return SupervisedChild("web", "test", spawn, ready, life, live=lambda: answers(port), **kw)


@pytest.fixture
def life() -> Lifecycle:
    return Lifecycle()


def test_a_child_that_is_sigkilled_is_restarted_and_the_record_says_so(tmp_path, life):
    port = free_port()
    c = child(tmp_path, port, life)
    c.start()
    try:
        first = c.pid
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: (r := life.record("web")) is not None and r.restarts == 1 and r.state == "running", 10,
                   "the restart")
        assert c.pid != first and answers(port)
        rec = life.record("web")
        assert rec.last_exit == "killed by SIGKILL" and rec.pid == c.pid
    finally:
        c.stop()
    assert [e.event for e in life.events("web")] == ["started", "died", "restarted", "stopping", "stopped"]
    assert not c.alive()


def test_a_sigstopped_child_is_found_hung_by_its_probe_killed_and_restarted(tmp_path, life):
    port = free_port()
    c = child(tmp_path, port, life, hang_timeout_s=1.5, probe_every_s=0.3)
    c.start()
    stopped = c.pid
    try:
        os.kill(stopped, signal.SIGSTOP)
        wait_until(lambda: life.record("web").restarts == 1, 15, "the hung child's restart")
        assert [e.event for e in life.events("web")][:3] == ["started", "hung", "restarted"]
        assert answers(port)
        with pytest.raises(ProcessLookupError):  # the stopped one was killed, not left behind
            for _ in range(50):
                os.kill(stopped, 0)
                time.sleep(0.1)
    finally:
        c.stop()


def test_a_crash_loop_backs_off_and_keeps_trying(tmp_path, life):
    port = free_port()
    flag = tmp_path / "healthy"
    # exits at once until the flag file exists, then serves
    script = (f"import os,sys\nif not os.path.exists({str(flag)!r}): sys.exit(3)\n" + SERVER.replace("; ", "\n"))
    c = child(tmp_path, port, life, command=[sys.executable, "-c", script, str(port)], ready_timeout_s=5,
              backoff=BackoffPolicy(initial_s=0.1, factor=2.0, max_s=0.4))
    flag.write_text("")
    c.start()
    try:
        flag.unlink()
        os.kill(c.pid, signal.SIGKILL)
        wait_until(lambda: sum(e.event == "restart-failed" for e in life.events("web")) >= 3, 20, "three failed tries")
        failed = [e for e in life.events("web") if e.event == "restart-failed"]
        gaps = [b.unix_s - a.unix_s for a, b in zip(failed, failed[1:], strict=False)]
        assert all(g >= 0.1 for g in gaps), gaps  # backed off between tries
        assert life.record("web").state == "restarting"
        flag.write_text("")
        wait_until(lambda: life.record("web").state == "running", 15, "recovery once the cause is gone")
        assert answers(port)
    finally:
        c.stop()


def test_a_deliberate_kill_is_not_undone_until_started_again(tmp_path, life):
    port = free_port()
    c = child(tmp_path, port, life)
    c.start()
    try:
        c.kill()
        time.sleep(0.5)  # several watcher polls: it must stay down
        assert not c.alive() and life.record("web").restarts == 0
        c.start(detail="again")
        assert answers(port)
    finally:
        c.stop()
    assert life.record("web").state == "stopped"


def test_a_hang_timeout_shorter_than_the_probe_period_is_refused(tmp_path, life):
    with pytest.raises(ValueError, match="hang_timeout_s"):
        child(tmp_path, 1, life, hang_timeout_s=0.5, probe_every_s=1.0)
