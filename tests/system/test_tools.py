"""wgns.system.tools: running a tool with subprocess, as the ops need it.

These run real processes on the machine (no networking is touched, so no sandbox is needed;
running a tool inside a namespace is exercised by every test_lifecycle test)."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

from wgns.errors import WgnsError
from wgns.system import tools


def test_output_is_captured_and_the_exit_status_kept() -> None:
    r = tools.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (r.stdout, r.stderr, r.returncode) == ("out\n", "err\n", 3)
    assert r.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]


def test_a_failure_is_a_wgns_error_with_the_tools_message() -> None:
    with pytest.raises(WgnsError, match=r"^`sh -c echo nope >&2; exit 1` failed: nope$"):
        tools.run(["sh", "-c", "echo nope >&2; exit 1"])


def test_a_signal_death_is_minus_the_signal_number() -> None:
    assert tools.run(["sh", "-c", "kill -KILL $$"], check=False).returncode == -signal.SIGKILL


@pytest.mark.parametrize("size", [10, 65536, 640_000])  # within, at and ten times a pipe's size
def test_input_and_output_of_any_size_do_not_deadlock(size: int) -> None:
    data = ("0123456789abcdef" * (size // 16 + 1))[:size]
    r = tools.run(["cat"], input=data)
    assert r.stdout == data


def test_input_the_tool_does_not_read_is_dropped_without_an_error() -> None:
    assert tools.run(["true"], input="x" * 500_000).returncode == 0
    assert tools.run(["true"], input="x").returncode == 0


def test_without_input_stdin_is_dev_null_not_the_callers() -> None:
    r = tools.run(["sh", "-c", "readlink /proc/self/fd/0; cat"])
    assert r.stdout == "/dev/null\n"


def test_a_missing_tool_is_a_wgns_error_that_says_so() -> None:
    with pytest.raises(WgnsError, match="wgns-no-such-tool is not installed"):
        tools.run(["wgns-no-such-tool"])


def test_sigpipe_is_back_to_default_in_the_child() -> None:
    # Python ignores SIGPIPE; a tool started by wgns must not inherit that
    r = tools.run(["sh", "-c", "grep SigIgn /proc/self/status"])
    ignored = int(r.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_no_descriptor_of_the_caller_reaches_the_tool() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(fd, True)  # as a shell's `3</dev/null` hands one to wgns
    try:
        r = tools.run(["sh", "-c", "ls /proc/self/fd"])
    finally:
        os.close(fd)
    assert str(fd) not in r.stdout.split(), r.stdout
    assert set(r.stdout.split()) <= {"0", "1", "2", "3"}  # 3: the fd ls itself reads with


def test_start_returns_while_the_tool_still_runs_and_wait_collects_it() -> None:
    # the tool blocks until the caller, after start() returned, opens the FIFO: start() cannot
    # have waited for it
    with tempfile.TemporaryDirectory() as d:
        fifo = os.path.join(d, "go")
        os.mkfifo(fifo)
        running = tools.start(["sh", "-c", f"cat; cat {fifo}"], input="abc")
        with open(fifo, "w") as f:
            f.write("def")
        r = running.wait()
    assert (r.stdout, r.returncode) == ("abcdef", 0)
