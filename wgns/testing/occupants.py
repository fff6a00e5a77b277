"""Finding, and killing, the processes inside a sandbox's namespaces.

A process is inside when its network or mount namespace is one the sandbox holds: the sandbox's
own pair, or one bind-mounted in its mount namespace (``/run/netns/*``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable


def ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


Inodes = tuple[frozenset[int], frozenset[int]]  # (network namespaces, mount namespaces)


def _unescape_mountinfo(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def pin_namespaces(pid: int) -> tuple[list[int], Inodes]:
    """Open the namespaces of the sandbox held by PID: its own network and mount namespaces and
    every namespace bind-mounted in that mount namespace (``/run/netns/*`` and any other nsfs
    mount). Returns the fds and the (net, mnt) inode sets.

    While the fds are open the namespaces cannot be freed, so their inode numbers cannot be
    reused by somebody else's new namespace: only then is "every process whose namespace has
    this inode" a safe thing to kill."""
    fds: list[int] = []
    net: set[int] = set()
    mnt: set[int] = set()

    def pin(path: str, kind: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        fds.append(fd)
        (net if kind == "net" else mnt).add(os.fstat(fd).st_ino)

    pin(f"/proc/{pid}/ns/net", "net")
    pin(f"/proc/{pid}/ns/mnt", "mnt")
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or " - nsfs " not in line:
            continue
        kind = fields[3].partition(":[")[0]  # e.g. "net:[4026532247]"
        if kind in ("net", "mnt"):
            pin(f"/proc/{pid}/root{_unescape_mountinfo(fields[4])}", kind)
    return fds, (frozenset(net), frozenset(mnt))


def unpin(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def pids_in(inodes: Inodes, exclude: Iterable[int]) -> list[int]:
    net, mnt = inodes
    skip = set(exclude)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in skip:
            continue
        n = ns_inode(pid, "net")
        if n is not None and n in net:
            found.append(pid)
            continue
        m = ns_inode(pid, "mnt")
        if m is not None and m in mnt:
            found.append(pid)
    return found


def kill_processes(inodes: Inodes, exclude: Iterable[int], timeout: float = 5) -> None:
    """SIGKILL every process in the given namespaces until none is left (or timeout).

    The namespaces must be pinned (see :func:`pin_namespaces`)."""
    skip = set(exclude)
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_in(inodes, skip)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None  # kernel thread or zombie
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
