"""Processes wgns starts and stops: identified by pid *and* start time, so that a reused pid
never gets a signal meant for a process that is gone."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time


def proc_starttime(pid: int) -> int | None:
    """PID's start time (clock ticks since boot), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the comm field may contain spaces and parentheses: split after the last ')'
    return int(data[data.rindex(")") + 2 :].split()[19])


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(")") + 2] == "Z"


def process_alive(pid: int, starttime: int | None) -> bool:
    """PID is still the process we started (same start time) and not a zombie."""
    return pid > 0 and proc_starttime(pid) == starttime and not _is_zombie(pid)


def _reap(pid: int) -> None:
    """Reap PID if it is our own child (a rolled-back `up`) and has exited."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process(pid: int, starttime: int | None, *, grace: float = 2.0, wait: bool = True) -> bool:
    """Stop PID if it is still the process we started (same start time). False if gone.

    SIGTERM, then SIGKILL after GRACE seconds. With wait=False it gets SIGKILL and is not waited
    for: for a process whose remains the kernel can clear up on its own, once it can no longer
    run a single instruction."""
    current = proc_starttime(pid) if pid > 0 else None
    if current is None:
        return False
    if starttime is not None and current != starttime:
        return False  # the pid was reused by someone else's process
    if not wait:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        return True
    # A pidfd wakes us the moment the process exits; polling /proc would oversleep.
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # it exited since the check
    except OSError:  # no pidfds (Linux < 5.3, or a seccomp filter): poll /proc instead
        pidfd = -1
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if pidfd >= 0:
        try:
            exited = _wait_exit(pidfd, grace)
        finally:
            os.close(pidfd)
        _reap(pid)
        if exited:
            return True
    else:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap(pid)
            if proc_starttime(pid) is None or _is_zombie(pid):
                return True
            time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _wait_exit(pidfd: int, timeout: float) -> bool:
    """A pidfd turns readable when its process has exited: wait up to TIMEOUT for that."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(max(1, int(left * 1000 + 0.999))):  # retried after EINTR by Python
            return True
