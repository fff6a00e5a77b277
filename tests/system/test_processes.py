"""wgns.system.processes: processes identified by pid and start time, and the Supervised
daemons (their stderr in a log; ready, or a message with the log's last line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wgns.errors import WgnsError
from wgns.system import processes


class Toy(processes.Supervised):
    """A shell daemon: ready once it has written READY, or it says SCRIPT's last words."""

    name = "toy"
    start_timeout = 30.0

    def __init__(self, script: str, ready_file: Path) -> None:
        super().__init__()
        self.script = script
        self.ready_file = ready_file

    def is_supported(self) -> bool:
        return True

    def argv(self) -> list[str]:
        return ["sh", "-c", self.script]

    def ready(self) -> bool:
        return self.ready_file.exists()


def test_a_supervised_daemon_runs_in_its_own_session_with_stderr_in_its_log(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready"
    log = tmp_path / "log" / "ns" / "toy.log"
    toy = Toy(f"echo started >&2; touch {ready}; exec sleep 60", ready)
    pid, starttime = toy.start(None, str(log))
    try:
        toy.wait_ready()
        assert starttime == processes.proc_starttime(pid)
        assert processes.process_alive(pid, starttime)
        assert os.getsid(pid) == pid  # outlives the wgns that started it
        assert log.read_text() == "started\n"
        assert processes.last_line(str(log)) == "started"
    finally:
        assert processes.stop_process(pid, starttime)
    assert processes.proc_starttime(pid) is None  # ended by SIGTERM, and reaped
    assert not processes.process_alive(pid, starttime)
    assert not processes.stop_process(pid, starttime)  # gone: nothing to stop


def test_a_daemon_that_exits_before_it_is_ready_is_a_wgns_error_with_its_last_words(
    tmp_path: Path,
) -> None:
    log = tmp_path / "toy.log"
    toy = Toy("echo starting >&2; echo 'cannot open /dev/net/tun' >&2; exit 3", tmp_path / "x")
    toy.start(None, str(log))
    with pytest.raises(WgnsError) as e:
        toy.wait_ready()
    assert e.value.message == "toy exited with status 3: cannot open /dev/net/tun"
    assert e.value.hint is None


def test_a_missing_program_is_a_wgns_error(tmp_path: Path) -> None:
    class Missing(Toy):
        def argv(self) -> list[str]:
            return ["wgns-no-such-daemon"]

    with pytest.raises(WgnsError, match="wgns-no-such-daemon is not installed"):
        Missing("", tmp_path / "r").start(None, str(tmp_path / "m.log"))


def test_a_reused_pid_is_never_signalled() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real = processes.proc_starttime(proc.pid)
        assert real is not None
        assert not processes.process_alive(proc.pid, real + 1)
        assert not processes.stop_process(proc.pid, real + 1)  # someone else's process
        assert proc.poll() is None
        assert processes.stop_process(proc.pid, real)
        # SIGTERM ended it within the grace time, and stop_process reaped its own child
        assert processes.proc_starttime(proc.pid) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_process_ignoring_sigterm_gets_sigkill_after_the_grace_time() -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    code += "print('ignoring', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ignoring\n"
        assert processes.stop_process(proc.pid, processes.proc_starttime(proc.pid), grace=0.1)
        assert proc.wait(timeout=30) == -9
    finally:
        proc.kill()
        proc.wait()


def test_remove_log_removes_empty_directories_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "LOG_DIR", str(tmp_path / "log"))
    a, b = processes.log_path("ns", "a"), processes.log_path("ns", "b")
    assert a == f"{tmp_path}/log/ns/a.log"
    os.makedirs(os.path.dirname(a))
    Path(a).write_text("")
    Path(b).write_text("")
    processes.remove_log(a)
    assert not Path(a).exists() and Path(b).exists()
    processes.remove_log(b)
    assert not (tmp_path / "log").exists()
    processes.remove_log(b)  # already gone: fine
