"""SIGTERM handled like Ctrl-C (``localnet.signals``) by the programs that start processes in sessions
of their own, and ``make benchmark``'s time limit (``benchmarks.run_all.run_bench``): what such a
program started is stopped, never left running; and ``make benchmark`` lists what it finds already
running when a benchmark starts.  Real processes throughout."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.run_all import run_bench
from fleet.supervisor import wait_until

ROOT = Path(__file__).resolve().parents[1]


def program(handled: bool, cleanup_s: float = 0.0, ignore_sigterm: bool = False) -> list[str]:
    """A program in the shape of a benchmark: it starts a child in a session of its own (as Triton
    and Envoy are started), prints the child's pid, works until stopped, and stops the child in a
    ``finally`` block that takes ``cleanup_s``."""
    code = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        from localnet.signals import interrupt_on_stop_signals
        if {handled}:
            interrupt_on_stop_signals()
        if {ignore_sigterm}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        try:
            print(child.pid, flush=True)  # in the try: the test signals as soon as it reads this
            time.sleep(300)
        finally:
            print("cleaning", flush=True)
            time.sleep({cleanup_s})
            child.terminate()
            child.wait()
            print("cleaned", flush=True)
    """)
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def started():
    """Start a program; yields (process, its child's pid); kills whatever is left at the end."""
    procs: list[tuple[subprocess.Popen[str], int]] = []

    def start(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        procs.append((proc, child))
        return proc, child

    yield start
    for proc, child in procs:
        for pid in (proc.pid, child):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("handled", [True, False], ids=["interrupt_on_stop_signals", "python-default"])
def test_a_stop_signal_runs_the_programs_cleanup_so_what_it_started_is_stopped(started, handled: bool,
                                                                               sig: signal.Signals) -> None:
    proc, child = started(program(handled))
    assert alive(child)
    proc.send_signal(sig)
    proc.wait(timeout=20)
    if handled:
        wait_until(lambda: not alive(child), 10, f"the program's child {child} to stop")
        assert proc.stdout is not None and proc.stdout.read().split() == ["cleaning", "cleaned"]
    else:  # what the handler is for: Python's default leaves the child running
        assert alive(child)


def test_a_second_signal_does_not_cut_the_cleanup_short(started) -> None:
    proc, child = started(program(True, cleanup_s=1.0))
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "cleaning"
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "cleaned"
    proc.wait(timeout=20)
    assert not alive(child)


def sig_ignored(pid: int, sig: signal.Signals) -> bool:
    """Whether ``pid`` ignores ``sig`` (the SigIgn mask of /proc/<pid>/status)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))


def test_under_nohup_sighup_stays_ignored() -> None:
    """A program started with SIGHUP ignored (``nohup``) keeps ignoring it; SIGTERM still stops it."""
    nohup = ["sh", "-c", 'trap "" HUP; exec "$0" "$@"']  # what nohup does, then the program
    proc = subprocess.Popen([*nohup, *program(True)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert sig_ignored(proc.pid, signal.SIGHUP) and not sig_ignored(proc.pid, signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.read().split() == ["cleaning", "cleaned"]
        assert not alive(child)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_process_started_during_the_cleanup_does_not_inherit_an_ignored_sigterm() -> None:
    code = textwrap.dedent("""
        import subprocess, sys, time
        from localnet.signals import interrupt_on_stop_signals
        interrupt_on_stop_signals()
        try:
            print("ready", flush=True)
            time.sleep(300)
        finally:
            late = subprocess.Popen(["sleep", "300"])
            print(late.pid, flush=True)
            sys.stdin.readline()  # the test reads the child's signal mask, then lets it go
            late.kill()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    late = None
    try:
        assert proc.stdout is not None and proc.stdin is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        late = int(proc.stdout.readline())
        assert not sig_ignored(late, signal.SIGTERM)
        proc.stdin.write("done\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if late is not None and alive(late):
            os.kill(late, signal.SIGKILL)


def test_a_benchmark_past_its_time_limit_is_stopped_with_sigterm_and_stops_what_it_started(tmp_path: Path) -> None:
    # the program's stdout goes to a file here: run_bench leaves it on the terminal, as make benchmark does
    out = tmp_path / "out"
    status = run_bench(["sh", "-c", f"exec {shlex.join(program(True))} > {out}"], 1.0, grace_s=20)
    assert status == "timed out after 1 s, stopped by SIGTERM"
    assert out.read_text().split()[1:] == ["cleaning", "cleaned"]
    assert not alive(int(out.read_text().split()[0]))


def test_a_benchmark_that_ignores_sigterm_is_killed_after_the_grace_period_and_the_status_says_so(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    status = run_bench(["sh", "-c", f"exec {shlex.join(program(True, ignore_sigterm=True))} > {out}"], 1.0,
                       grace_s=0.5)
    child = int(out.read_text().split()[0])
    try:
        assert status.startswith("timed out after 1 s, killed: still running 0.5 s after SIGTERM"), status
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_benchmark_that_ends_reports_its_exit_status() -> None:
    assert run_bench([sys.executable, "-c", "pass"], 30) == "ok"
    assert run_bench([sys.executable, "-c", "raise SystemExit(3)"], 30) == "exit 3"


def children(pid: int) -> dict[int, str]:
    """{pid: command name} of the live processes whose parent is ``pid``."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text.rsplit(")", 1)[1].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            out[int(stat.parent.name)] = name
    return out


@pytest.mark.integration
def test_a_real_benchmark_stopped_with_sigterm_leaves_no_triton_or_envoy_running(tmp_path: Path) -> None:
    """The Envoy overhead benchmark (a real Triton replica, an ADS server and an Envoy) gets SIGTERM in
    its first phase, as ``timeout`` or ``make benchmark``'s time limit sends it."""
    log = tmp_path / "log"
    with log.open("w") as f:
        bench = subprocess.Popen([sys.executable, "-m", "benchmarks.xds.envoy_overhead", "--models", "digits_classifier",
                                  "--seconds", "60", "--repeats", "1", "--only", "shipped", "--out", str(tmp_path / "out")],
                                 cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=f, stderr=subprocess.STDOUT)
    started: dict[int, str] = {}
    try:
        wait_until(lambda: "ready (pid" in log.read_text() or bench.poll() is not None, 120, "the benchmark's Envoy")
        started.update(children(bench.pid))
        assert sorted(set(started.values())) == ["envoy", "tritonserver"], (started, log.read_text()[-2000:])
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=60)
        wait_until(lambda: not any(alive(p) for p in started), 20, f"{started} to stop")
        assert not (tmp_path / "out" / "summary.json").exists()  # an interrupted run writes no results
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=10)
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_make_benchmark_lists_the_tritons_already_running_when_a_benchmark_starts(tmp_path: Path) -> None:
    from benchmarks.run_all import running

    # a process whose command name is tritonserver (a copy of sleep), as a left-over replica looks
    fake = tmp_path / "tritonserver"
    fake.write_bytes(Path(shutil.which("sleep") or "/bin/sleep").read_bytes())
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "300"])
    try:
        wait_until(lambda: f"tritonserver {proc.pid}" in running(), 10, "the fake Triton to be listed")
        assert all(entry.split()[0] in ("tritonserver", "envoy", "prometheus") for entry in running())
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert f"tritonserver {proc.pid}" not in running()
