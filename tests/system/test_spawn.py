"""wgns.system.spawn: what wgns relied on subprocess for, kept without importing it.

These run real processes on the machine (no networking is touched, so no sandbox is needed)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from wgns.system import spawn


def test_output_is_captured_and_the_exit_status_kept() -> None:
    r = spawn.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.stdout, r.stderr, r.returncode) == ("out\n", "err\n", 3)
    assert r.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]


def test_a_signal_death_is_minus_the_signal_number_as_subprocess_reports_it() -> None:
    assert spawn.run(["sh", "-c", "kill -KILL $$"]).returncode == -signal.SIGKILL


def test_large_input_and_output_do_not_deadlock() -> None:
    data = "0123456789abcdef" * 40_000  # 640 KB: ten times a pipe's buffer, both ways
    r = spawn.run(["cat"], input=data)
    assert r.returncode == 0
    assert r.stdout == data


def test_input_the_tool_does_not_read_is_dropped_without_an_error() -> None:
    assert spawn.run(["true"], input="x" * 500_000).returncode == 0


def test_without_input_stdin_is_dev_null_not_the_callers() -> None:
    r = spawn.run(["sh", "-c", "readlink /proc/self/fd/0; cat"])
    assert r.stdout == "/dev/null\n"


def test_a_missing_tool_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        spawn.run(["wgns-no-such-tool"])


def test_sigpipe_is_back_to_default_in_the_child() -> None:
    # Python ignores SIGPIPE; a tool started by wgns must not inherit that
    r = spawn.run(["sh", "-c", "grep SigIgn /proc/self/status"])
    ignored = int(r.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_no_descriptor_of_the_caller_reaches_the_tool() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(fd, True)  # as a shell's `3</dev/null` hands one to wgns
    spawn._inheritable_closed = False  # the check runs once per process: make it run here
    try:
        r = spawn.run(["sh", "-c", "ls /proc/self/fd"])
    finally:
        os.close(fd)
    assert str(fd) not in r.stdout.split(), r.stdout
    assert set(r.stdout.split()) <= {"0", "1", "2", "3"}  # 3: the fd ls itself reads with


def test_start_returns_at_once_and_wait_collects_the_result() -> None:
    t0 = time.monotonic()
    running = spawn.start(["sh", "-c", "sleep 0.3; cat"], input="abc")
    started = time.monotonic() - t0
    r = running.wait()
    assert started < 0.2, f"start() waited for the tool ({started:.3f}s)"
    assert (r.stdout, r.returncode) == ("abc", 0)


def test_spawn_in_a_new_session_with_given_descriptors() -> None:
    rfd, wfd = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        pid = spawn.spawn(
            ["sh", "-c", "cut -d' ' -f6 /proc/$$/stat; echo done"],
            stdin=null,
            stdout=wfd,
            stderr=null,
            new_session=True,
        )
    finally:
        os.close(wfd)
        os.close(null)
    with os.fdopen(rfd) as f:
        out = f.read().split()
    assert spawn.exit_status(pid) == 0
    assert out[-1] == "done"
    assert int(out[0]) == pid  # the leader of its own session


def test_exit_status_without_blocking_is_none_while_running() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        pid = spawn.spawn(["sleep", "5"], stdin=null, stdout=null, stderr=null)
    finally:
        os.close(null)
    try:
        assert spawn.exit_status(pid, block=False) is None
    finally:
        os.kill(pid, signal.SIGTERM)
    assert spawn.exit_status(pid) == -signal.SIGTERM
