"""The restart backoff and the process record, as tables (no processes)."""

from __future__ import annotations

import json
import os

import pytest

from fleet.restarts import BackoffPolicy, Lifecycle, describe_exit, read_events, read_processes
from local_platform.__main__ import processes_table


@pytest.mark.parametrize(("failures", "delay_s"), [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0), (9, 30.0), (50, 30.0)],
                         ids=lambda v: str(v))
def test_a_first_crash_restarts_at_once_and_a_crash_loop_backs_off_to_the_cap(failures, delay_s):
    assert BackoffPolicy(initial_s=0.5, factor=2.0, max_s=30.0).delay_s(failures) == delay_s


def test_a_process_that_stayed_up_long_enough_counts_as_healthy_again():
    policy = BackoffPolicy(stable_after_s=30.0)
    assert policy.failures_after(5, uptime_s=2.0) == 6
    assert policy.failures_after(5, uptime_s=31.0) == 1


@pytest.mark.parametrize("bad", [dict(initial_s=-1), dict(factor=0.5), dict(initial_s=5, max_s=1), dict(stable_after_s=0)],
                         ids=str)
def test_a_backoff_that_makes_no_sense_is_refused(bad):
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(**bad)


@pytest.mark.parametrize(("code", "text"), [(None, "running"), (0, "exit 0"), (1, "exit 1"), (-9, "killed by SIGKILL"),
                                            (-19, "killed by SIGSTOP"), (-15, "killed by SIGTERM")])
def test_exits_are_described_as_an_operator_reads_them(code, text):
    assert describe_exit(code) == text


def test_the_record_counts_deaths_and_restarts_and_is_written_for_make_status(tmp_path):
    clock = iter(float(t) for t in range(100, 200))
    life = Lifecycle(tmp_path, clock=lambda: next(clock))
    life.event("control-server", "control-server", "started", pid=10)
    life.event("control-server", "control-server", "died", "up 3.0 s", pid=10, returncode=-9)
    assert life.record("control-server").state == "restarting"
    life.event("control-server", "control-server", "restarted", pid=11)
    rec = life.record("control-server")
    assert (rec.state, rec.pid, rec.restarts, rec.last_exit) == ("running", 11, 1, "killed by SIGKILL")
    assert (rec.last_exit_unix_s, rec.last_restart_unix_s) == (101.0, 102.0)
    written = read_processes(tmp_path)
    assert written[0]["restarts"] == 1 and written[0]["last_exit"] == "killed by SIGKILL"
    assert [e["event"] for e in read_events(tmp_path)] == ["started", "died", "restarted"]
    table = processes_table(written, now=110.0)
    assert "killed by SIGKILL 9 s ago, back 8 s ago" in table


def test_a_corrupt_process_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "processes.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="processes.json"):
        read_processes(tmp_path)


def test_a_crash_loop_does_not_grow_the_event_memory_without_end():
    life = Lifecycle()
    for i in range(5000):
        life.event("x", "triton", "died" if i % 2 else "restarted", returncode=1)
    assert len(life.events()) == 2000
    assert life.record("x").restarts == 2500


def _record(folder, owner: int, **procs) -> None:
    (folder / "processes.json").write_text(json.dumps({"owner_pid": owner, "processes": [
        {"name": name, "kind": "triton", "state": state, "pid": pid, "started_unix_s": started}
        for name, (pid, state, started) in procs.items()]}))


def test_children_of_a_killed_platform_are_found_and_stopped_and_nothing_else_is(tmp_path):
    import subprocess
    import sys
    import time

    from fleet.restarts import leftovers, reap_leftovers

    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = time.time()
        _record(tmp_path, dead_owner.pid, **{
            "cpu-0": (child.pid, "running", now),
            "envoy": (other.pid, "running", now - 3600),  # this pid's process started after the record: reused
            "old": (child.pid, "stopped", now)})
        owner, found = leftovers(tmp_path)
        assert (owner, found) == (dead_owner.pid, [("cpu-0", child.pid)])
        _record(tmp_path, os.getppid(), **{"cpu-0": (child.pid, "running", now)})  # its owner lives: not ours
        assert leftovers(tmp_path)[1] == []
        _record(tmp_path, dead_owner.pid, **{"cpu-0": (child.pid, "running", now)})
        assert reap_leftovers(tmp_path, grace_s=5.0)[1] == [("cpu-0", child.pid)]
        assert child.wait(timeout=10) is not None and other.poll() is None
    finally:
        for p in (child, other):
            p.kill()
            p.wait()
