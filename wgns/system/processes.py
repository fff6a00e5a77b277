"""Processes wgns starts and stops, identified by pid *and* start time so that a reused pid
never gets a signal meant for a process that is gone; and the daemons it supervises."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable

from wgns.errors import WgnsError
from wgns.system import netns


def proc_starttime(pid: int) -> int | None:
    """PID's start time (clock ticks since boot), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the comm field may contain spaces and parentheses: split after the last ')'
    return int(data[data.rindex(")") + 2 :].split()[19])


def proc_text(path: str) -> str:
    """The text of PATH, a file under /proc ("" when its process is gone or it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


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


LOG_DIR = "/run/wgns/log"  # the daemons' stderr: LOG_DIR/NS/NAME.log


def log_path(ns: str, name: str) -> str:
    """Where the daemon NAME of namespace NS writes its errors."""
    return f"{LOG_DIR}/{ns}/{name}.log"


def remove_log(path: str) -> None:
    """Remove the log at PATH, and its directories when nothing else is left in them."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    for d in (os.path.dirname(path), LOG_DIR):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def last_line(path: str) -> str:
    """The last non-empty line of the log at PATH ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


class Supervised:
    """A daemon wgns starts and watches (wireguard-go, a forward's relay; next dhcpcd,
    wpa_supplicant).

    A subclass says what to run (``argv``, ``env``, ``pass_fds``), whether it can
    (``is_supported``) and when it is ready (``ready``: False while not yet, or a WgnsError with
    the daemon's own reason when it never will be). ``start`` runs it in a namespace, in its
    own session (it outlives the wgns that started it), with stdin and stdout on /dev/null and
    stderr appended to a log the user can read; the (pid, start time) it returns identify it
    for process_alive and stop_process. ``wait_ready`` waits until ``ready()``, or says why it
    never will be."""

    name = ""  # the program, for messages
    start_timeout = 10.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = ""
        self._started = 0.0

    def is_supported(self) -> bool:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The daemon's environment (None: wgns's own)."""
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def pass_fds(self) -> tuple[int, ...]:
        """Descriptors the daemon inherits (beside stdin, stdout and stderr)."""
        return ()

    #: What to do when the daemon's program is missing.
    install_hint = "run scripts/install.sh"

    def child_setup(self, ns: str | None) -> Callable[[], None] | None:
        """What the forked child runs just before exec to put itself in NS; None: the calling
        thread enters NS's network namespace around the fork instead."""
        return None

    def start(self, ns: str | None, log_path: str) -> tuple[int, int | None]:
        """Start the daemon in NS (None: the calling thread's namespace), its stderr appended to
        LOG_PATH; return its pid and start time at once (see wait_ready)."""
        os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
        argv = self.argv()
        setup = self.child_setup(ns)
        with open(log_path, "ab") as log, netns.entered(None if setup else ns):
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=self.env(),
                    start_new_session=True,
                    pass_fds=self.pass_fds(),
                    preexec_fn=setup,
                )
            except FileNotFoundError:
                raise WgnsError(f"{argv[0]} is not installed", hint=self.install_hint) from None
        self._log = log_path
        self._started = time.monotonic()
        pid = self._proc.pid
        return pid, proc_starttime(pid)

    def wait_ready(self) -> None:
        """Until ready(); a WgnsError with the log's last line if the daemon exits first."""
        proc = self._proc
        if proc is None:
            raise WgnsError(f"{self.name} was not started")
        deadline = self._started + self.start_timeout
        while not self.ready():
            status = proc.poll()
            if status is not None:
                # a daemon that says why it cannot start (a ready() that raises) may have said
                # so just before it exited: its own words first
                self.ready()
                # its last words: the log goes with the rollback that follows
                raise WgnsError(f"{self.name} exited with status {status}: {last_line(self._log)}")
            if time.monotonic() > deadline:
                raise WgnsError(
                    f"{self.name} did not start in {self.start_timeout:g}s",
                    hint=f"its log: {self._log}",
                )
            # daemons usually answer within a few ms, and a ready() check costs microseconds:
            # back off only when it is slow
            slow = time.monotonic() - self._started > 0.25
            time.sleep(0.02 if slow else 0.0005)
