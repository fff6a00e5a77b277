"""Supervision of a relay without a wgns daemon: the relay process supervises itself.

The process wgns starts (and records, by pid and start time) is a small supervisor: it has
bound the listening sockets already, forks the worker that relays on them, and when the worker
dies (a crash, the OOM killer, a SIGKILL) starts a new one on the *same* sockets, so the port
never stops accepting (connections wait in the backlog meanwhile). Restarts back off: 0.1 s,
doubling up to 5 s; a worker that ran for a minute resets that. After MAX_QUICK_DEATHS deaths
in a row, each within QUICK seconds of its start, or once the namespace is gone, the supervisor
gives up and exits: the relay is then dead, `wgns forward list` says so, and `wgns forward add`
of the same forward (or :func:`wgns.features.forward.runtime.repair`, which a watchdog may
call) starts it again. Every start, death and restart is a line in the relay's log (its stderr,
/run/wgns/log/NS/relay-PORT.log).

If the supervisor itself dies, its worker notices (the lifeline pipe reads EOF) and exits, so
nothing of a dead relay keeps the port.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable

FIRST_DELAY = 0.1
MAX_DELAY = 5.0
STABLE = 60.0  # a worker that ran this long was healthy: the backoff starts over
QUICK = 10.0
MAX_QUICK_DEATHS = 8
READY_TIMEOUT = 10.0


def log(name: str, text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"{stamp} relay {name} (supervisor {os.getpid()}): {text}", file=sys.stderr, flush=True)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def backoff(quick_deaths: int) -> float:
    """The wait before restart number QUICK_DEATHS (1-based) of a run of quick deaths."""
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(0, quick_deaths - 1))


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


def say(fd: int, text: str) -> bool:
    """Tell the starter TEXT ("ready" or why not) on FD (-1: stdout/stderr) and close FD. False
    when the starter is gone: it may not have recorded us, so a relay then exits rather than
    run unrecorded."""
    if fd < 0:
        print(text, file=sys.stdout if text == "ready" else sys.stderr, flush=True)
        return True
    try:
        os.write(fd, (text + "\n").encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class _State:
    """What the SIGTERM handler and the supervision loop share."""

    def __init__(self) -> None:
        self.stopping = False
        self.child = 0

    def stopped(self) -> bool:
        return self.stopping  # a call: set by a signal handler between any two statements


def run(
    name: str,
    worker: Callable[[int, int], int],
    ready_fd: int,
    *,
    netns_path: str | None = None,
) -> int:
    """Supervise WORKER(ready fd, lifeline fd) -> exit status, run in forked children. READY_FD
    gets "ready" once the first worker is ready (or the first worker's error, and we exit)."""
    me = _State()

    def on_term(signum: int, frame: object) -> None:
        me.stopping = True
        if me.child > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(me.child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    life_r, life_w = os.pipe()
    first = True
    quick_deaths = 0
    while True:
        ready_r, ready_w = os.pipe()
        started = time.monotonic()
        child = me.child = os.fork()
        if child == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.close(life_w)
            os.close(ready_r)
            if ready_fd >= 0:
                os.close(ready_fd)
            code = 1
            try:
                code = worker(ready_w, life_r)
            finally:
                os._exit(code)
        os.close(ready_w)
        said = _read_line(ready_r, READY_TIMEOUT)
        os.close(ready_r)
        if said == "ready":
            log(name, f"worker {child} relays")
            if first:
                first = False
                told, ready_fd = say(ready_fd, "ready"), -1  # say() closed it
                if not told:
                    log(name, "the starter is gone before it heard ready: exiting")
                    os.kill(child, signal.SIGTERM)
                    os.waitpid(child, 0)
                    return 1
        elif first:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            say(ready_fd, said or f"the relay {name} did not start")
            return 1
        else:
            log(name, f"worker {child} did not start: {said or 'no answer'}")
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except ChildProcessError:
                status = 0
                break
        me.child = 0
        if me.stopped():
            return 0
        lived = time.monotonic() - started
        log(name, f"worker {describe_status(status)} after {lived:.1f} s")
        if netns_path is not None and not os.path.exists(netns_path):
            log(name, f"{netns_path} is gone: giving up")
            return 1
        if lived >= STABLE:
            quick_deaths = 0
        elif lived < QUICK:
            quick_deaths += 1
        if quick_deaths >= MAX_QUICK_DEATHS:
            log(name, f"{quick_deaths} quick deaths in a row: giving up")
            return 1
        delay = backoff(max(1, quick_deaths))
        log(name, f"restarting in {delay:.1f} s")
        deadline = time.monotonic() + delay
        while not me.stopped() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if me.stopped():
            return 0
