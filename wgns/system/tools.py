"""Running a tool (ip, nft, wg): subprocess, inside a network namespace when asked.

The child inherits the calling thread's network namespace, so a tool runs in NS by entering it
around the fork (:func:`wgns.system.netns.entered`). Output is captured as text; a tool that is
not installed is a WgnsError that says so.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence

from wgns.errors import WgnsError
from wgns.system import netns

Completed = subprocess.CompletedProcess

# A pipe holds 64 KiB: input up to that size is written at start, so that the tool works on it
# while the caller does something else; larger input is written while the output is read.
_PIPE_CAPACITY = 65536


class Running:
    """A tool started by :func:`start`; collect its result with :meth:`wait`."""

    def __init__(self, proc: subprocess.Popen[str], pending: str | None) -> None:
        self.proc = proc
        self.args = [str(a) for a in proc.args]  # type: ignore[union-attr]
        self._pending = pending

    def wait(self) -> Completed[str]:
        """Feed the rest of the input, read all output, reap the tool (killed if interrupted)."""
        try:
            out, err = self.proc.communicate(self._pending)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        return subprocess.CompletedProcess(self.args, self.proc.returncode, out, err)


def start(
    argv: Sequence[str],
    *,
    input: str | None = None,
    ns: str | None = None,
) -> Running:
    """Start ARGV (in NS when given) and return at once; INPUT on its stdin, else /dev/null."""
    with netns.entered(ns):
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except FileNotFoundError as e:
            raise WgnsError(f"{argv[0]} is not installed", hint="run scripts/install.sh") from e
    pending = input
    if input is not None and proc.stdin is not None and len(input.encode()) <= _PIPE_CAPACITY:
        # fits the empty pipe, so this never blocks; closed, so the tool sees its end now
        stdin, proc.stdin = proc.stdin, None
        with contextlib.suppress(BrokenPipeError):  # exited without reading: wait() says why
            stdin.write(input)
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        pending = None
    return Running(proc, pending)


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    ns: str | None = None,
    check: bool = True,
) -> Completed[str]:
    """Run ARGV to completion (in NS when given); with CHECK, a failure is a WgnsError."""
    proc = start(argv, input=input, ns=ns).wait()
    return checked(proc) if check else proc


def checked(proc: Completed[str]) -> Completed[str]:
    """PROC, or a WgnsError with its message when it failed."""
    if proc.returncode != 0:
        why = proc.stderr.strip() or proc.stdout.strip()
        raise WgnsError(f"`{' '.join(proc.args)}` failed: {why}")
    return proc
