"""os and os.path helpers built on the posix module. GOING: `wgns exec`'s path has its own in
wgns.system.startup, and the modules outside it that still import this one (profile.config,
engine.state, engine.ops, commands.strip) take os, os.path and pathlib as they are rewritten;
then delete this module and tests/system/test_paths.py.
"""

from __future__ import annotations

import posix
import sys
from _stat import S_ISDIR, S_ISLNK, S_ISREG

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from os import PathLike

_ENCODING = sys.getfilesystemencoding()
_ERRORS = sys.getfilesystemencodeerrors()


def fsencode(name: str) -> bytes:
    return name.encode(_ENCODING, _ERRORS)


def fsdecode(name: bytes) -> str:
    return name.decode(_ENCODING, _ERRORS)


def join(first: str, *rest: str) -> str:
    """os.path.join: an absolute part restarts the path."""
    path = first
    for part in rest:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def _mode(path: str, *, follow: bool = True) -> int | None:
    try:
        return (posix.stat(path) if follow else posix.lstat(path)).st_mode
    except (OSError, ValueError):
        return None


def exists(path: str) -> bool:
    return _mode(path) is not None


def isdir(path: str) -> bool:
    mode = _mode(path)
    return mode is not None and S_ISDIR(mode)


def isfile(path: str) -> bool:
    mode = _mode(path)
    return mode is not None and S_ISREG(mode)


def lexists(path: str) -> bool:
    return _mode(path, follow=False) is not None


def ismount(path: str) -> bool:
    """os.path.ismount: PATH is on another device than its parent, or is its own parent. (The
    parent is found by name, not as PATH/..: a namespace file is mounted on a file.)"""
    try:
        st = posix.lstat(path)
        if S_ISLNK(st.st_mode):
            return False
        parent = posix.stat(dirname(path.rstrip("/")) or "/")
    except (OSError, ValueError):
        return False
    return st.st_dev != parent.st_dev or st.st_ino == parent.st_ino


def stem(path: str | PathLike[str]) -> str:
    """pathlib's PurePath.stem: the last component without its suffix."""
    base = posix.fspath(path).rpartition("/")[2]
    dot = base.rfind(".")
    return base[:dot] if 0 < dot < len(base) - 1 else base


def suffix(path: str | PathLike[str]) -> str:
    """pathlib's PurePath.suffix: ".toml" of "vpn.toml", "" of ".toml"."""
    base = posix.fspath(path).rpartition("/")[2]
    return base[len(stem(base)) :]


def dirname(path: str) -> str:
    """os.path.dirname."""
    head = path[: path.rfind("/") + 1]
    return head.rstrip("/") or head


def makedirs(path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """os.makedirs: PATH and any missing parents."""
    head, _, tail = path.rstrip("/").rpartition("/")
    if head and tail and _mode(head) is None:
        makedirs(head, exist_ok=True)  # exist_ok: made by someone else meanwhile is fine
    try:
        posix.mkdir(path, mode)
    except OSError:
        if not exist_ok or not isdir(path):
            raise
