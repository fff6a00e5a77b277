"""Running tools (nft, ip, wg, wireguard-go) with posix_spawn instead of the subprocess module.

`wgns up` runs two or three tools, and importing subprocess (signal's enums, threading,
selectors, locale) cost it more than running them: ``python3.11 -IS -c 'import os, ipaddress,
re, enum, subprocess'`` takes 17.8 ms against 13.5 ms without subprocess on the CI machine. This
module keeps what wgns relies on from subprocess: output captured as text, input written while
output is read (no pipe deadlock), the exit status as subprocess reports it (-N for signal N),
FileNotFoundError for a missing tool, SIGPIPE and SIGXFSZ back to their defaults in the child
(Python ignores SIGPIPE, and an ignored signal stays ignored across exec), and no inherited file
descriptors beyond 0, 1 and 2 (subprocess's close_fds).
"""

from __future__ import annotations

import os
import select

from wgns.errors import suppress

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SIGPIPE = 13  # Linux's numbers: the signal module would build its enums for two constants
SIGXFSZ = 25
SIGKILL = 9
_DEFAULT_SIGNALS = (SIGPIPE, SIGXFSZ)
_inheritable_closed = False


class Completed:
    """What subprocess.CompletedProcess told wgns: the exit status and the captured text."""

    __slots__ = ("args", "returncode", "stderr", "stdout")

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _no_inherited_fds() -> None:
    """Once per process: 0, 1 and 2 open (else a pipe could land on one and be clobbered by the
    child's dup2s), and every descriptor above 2 close-on-exec: Python's own are already, but
    one handed to wgns by its caller (`3>file`) must not reach a daemon that outlives us."""
    global _inheritable_closed
    if _inheritable_closed:
        return
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: this one
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:  # the descriptor listdir itself used, closed by now
                continue
    _inheritable_closed = True


def spawn(
    argv: Sequence[str],
    *,
    stdin: int,
    stdout: int,
    stderr: int,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> int:
    """Start ARGV (looked up in PATH) with the given descriptors as 0, 1, 2; return its pid.
    The child inherits the calling thread's namespaces, as a forked one would."""
    _no_inherited_fds()
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawnp(
        argv[0],
        list(argv),
        os.environ if env is None else env,
        file_actions=actions,
        setsigdef=_DEFAULT_SIGNALS,
        setsid=new_session,
    )


def exit_status(pid: int, *, block: bool = True) -> int | None:
    """Reap PID: its status as subprocess reports it, or None while it runs (block=False)."""
    while True:
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except InterruptedError:  # pragma: no cover - retried by Python since PEP 475
            continue
        if done == 0:
            return None
        return os.waitstatus_to_exitcode(status)


def run(
    argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None
) -> Completed:
    """Run ARGV to completion, INPUT on its stdin (else /dev/null), stdout and stderr captured.
    If this is interrupted (Ctrl-C), the tool is killed and reaped, as subprocess.run does."""
    return start(argv, input=input, env=env).wait()


def start(
    argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None
) -> Running:
    """Start ARGV as :func:`run` does and return at once: the caller goes on with other work
    while the tool runs, and collects its result with :meth:`Running.wait`."""
    _no_inherited_fds()
    if input is None:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
    else:
        in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = spawn(argv, stdin=in_r, stdout=out_w, stderr=err_w, env=env)
    except BaseException:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            if fd >= 0:
                os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    return Running(list(argv), pid, in_w, out_r, err_r, input.encode() if input else b"")


class Running:
    """A tool started by :func:`start`: its pid and the pipes to it."""

    def __init__(
        self, args: list[str], pid: int, in_w: int, out_r: int, err_r: int, data: bytes
    ) -> None:
        self.args = args
        self.pid = pid
        self._in_w = in_w
        self._out_r = out_r
        self._err_r = err_r
        self._pending = memoryview(data)
        if in_w >= 0:
            os.set_blocking(in_w, False)
            self._feed()  # as much as the pipe takes now, so the tool can start on it

    def _feed(self) -> None:
        try:
            while self._pending:
                self._pending = self._pending[os.write(self._in_w, self._pending[:65536]) :]
        except BlockingIOError:
            return
        except BrokenPipeError:  # the tool exited without reading it all
            self._pending = self._pending[:0]
        os.close(self._in_w)
        self._in_w = -1

    def wait(self) -> Completed:
        """Feed the rest of the input, read all output, reap the tool."""
        out, err = self._out_r, self._err_r
        chunks: dict[int, list[bytes]] = {out: [], err: []}
        poller = select.poll()
        poller.register(self._out_r, select.POLLIN)
        poller.register(self._err_r, select.POLLIN)
        if self._in_w >= 0:
            poller.register(self._in_w, select.POLLOUT)
        try:
            open_outputs = 2
            while open_outputs:
                for fd, _event in poller.poll():
                    if fd == self._in_w:
                        self._feed()
                        if self._in_w < 0:
                            poller.unregister(fd)
                        continue
                    data = os.read(fd, 65536)
                    if data:
                        chunks[fd].append(data)
                    else:
                        poller.unregister(fd)
                        open_outputs -= 1
        except BaseException:
            with suppress(ProcessLookupError):
                os.kill(self.pid, SIGKILL)
            exit_status(self.pid)
            raise
        finally:
            for fd in (self._in_w, self._out_r, self._err_r):
                if fd >= 0:
                    os.close(fd)
            self._in_w = self._out_r = self._err_r = -1
        returncode = exit_status(self.pid)
        assert returncode is not None
        return Completed(
            self.args,
            returncode,
            b"".join(chunks[out]).decode(errors="replace"),
            b"".join(chunks[err]).decode(errors="replace"),
        )
