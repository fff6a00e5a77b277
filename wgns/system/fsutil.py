"""Files that other processes read or wait on while wgns changes them.

- :func:`write_atomically`: a file replaced whole (a temporary file beside it, renamed over it),
  so that a reader, or a crash, never sees half of it.
- :func:`lock_file`: an exclusive flock on a lock file that its last holder may remove (wgns
  leaves nothing in /run). A waiter can then get the lock on a file already unlinked while a
  newcomer locks a new one at the same path; so the lock is held only once the path still
  names the locked file, and taken again otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable


def write_atomically(
    path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644, *, fsync: bool = True
) -> None:
    """Replace PATH by DATA with MODE (whatever the umask); FSYNC before the rename."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            while raw:
                raw = raw[os.write(fd, raw) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _wait(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)


def lock_file(
    path: str | os.PathLike[str],
    flock: Callable[[int], None] = _wait,
    *,
    make_dir: Callable[[], None] | None = None,
) -> int:
    """An open file descriptor of PATH holding its lock (FLOCK takes it: by default it waits;
    what it raises is raised here). MAKE_DIR creates PATH's directory first, each try (a last
    holder may have removed it)."""
    path = os.fspath(path)
    while True:
        if make_dir is not None:
            make_dir()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # the directory was removed between the mkdir and the open
        try:
            flock(fd)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # we locked a file its last holder had already unlinked
