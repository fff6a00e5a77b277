"""Every start-up shim of `wgns exec`'s path, and only of it.

`wgns exec` wraps each program a user runs, so its start is paid every time; its budget is the
double-sudo helper it replaces (`sudo -E ip netns exec NS sudo -E -u "#UID" -g "#GID" CMD`, about
11 ms here, bench/bench_exec.py). The path is: the launcher (scripts/wgns-launcher.in, `python3
-I -S`) -> wgns.commands.exec -> wgns.system.execview and wgns.system.runas -> wgns.system.netns,
wgns.system.libc, this module and wgns.errors. Nothing else in wgns uses these shims: the rest
uses os, os.path, json and contextlib as usual.

Each shim below says what it replaces and what that would cost the path: the cumulative time of
`python3.11 -I -S -X importtime -c 'import X'` (X and the modules it loads; median of 21 runs on
the 2-core CI machine, where `python3 -I -S -c pass` takes ~7 ms and the whole `wgns exec` ~10 ms
against ~11 ms for the double-sudo helper). tests/system/test_startup.py compares each with the
standard thing it replaces, and tests/commands/test_exec.py checks that the launcher loads none
of them. Two more rules of the path live in the modules themselves, as they must:

- no `typing` (8.6 ms): the modules of the path write ``TYPE_CHECKING = False`` (which mypy
  treats as typing.TYPE_CHECKING) and import typing and collections.abc under it only;
- no `ctypes` (2.6 ms; its C half 0.4 ms): wgns.system.libc binds libc on ``_ctypes``.

And no dataclasses (13 ms): the path's few classes (runas.Target, commands.exec.Request) are
plain classes with __slots__.
"""

from __future__ import annotations

import posix
import sys

# signal and stat: the C halves. `import signal` costs 4.0 ms (it wraps every constant and
# handler in enums), _signal 0.06 ms; stat.py (0.12 ms) is `from _stat import *` plus Python
# fallbacks: kept off the path with the rest of os.
from _signal import SIG_DFL, SIGPIPE, SIGXFSZ  # type: ignore[import-not-found]  # (no stub)
from _signal import signal as set_signal
from _stat import S_ISDIR, S_ISLNK, S_ISREG

from wgns.errors import DamagedRecord, WgnsError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see above)
if TYPE_CHECKING:
    from typing import Any

#: Where the engine keeps each namespace's record (wgns.engine.state writes /run/wgns/NS.json).
RECORD_DIR = "/run/wgns"

__all__ = ["SIGPIPE", "SIGXFSZ", "SIG_DFL", "S_ISDIR", "S_ISLNK", "S_ISREG", "set_signal"]

# ---------------------------------------------------------------------------- os and os.path
# `import os` costs the path 1.0 ms (with _collections_abc for os.environ, posixpath, stat,
# genericpath). The path calls the posix module os is built on (os.open is posix.open, ...)
# and these helpers.

_ENCODING = sys.getfilesystemencoding()
_ERRORS = sys.getfilesystemencodeerrors()


def fsencode(name: str) -> bytes:
    """os.fsencode for a str."""
    return name.encode(_ENCODING, _ERRORS)


def fsdecode(name: bytes) -> str:
    """os.fsdecode for bytes."""
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


def isdir(path: str) -> bool:
    """os.path.isdir."""
    mode = _mode(path)
    return mode is not None and S_ISDIR(mode)


def isfile(path: str) -> bool:
    """os.path.isfile."""
    mode = _mode(path)
    return mode is not None and S_ISREG(mode)


def ismount(path: str) -> bool:
    """os.path.ismount: PATH is on another device than its parent, or is its own parent. (The
    parent is found by name, not as PATH/..: a namespace file is mounted on a file.)"""
    try:
        st = posix.lstat(path)
        if S_ISLNK(st.st_mode):
            return False
        trimmed = path.rstrip("/")
        parent = posix.stat(trimmed[: trimmed.rfind("/")] or "/")
    except (OSError, ValueError):
        return False
    return st.st_dev != parent.st_dev or st.st_ino == parent.st_ino


# ---------------------------------------------------------------------------------- contextlib


class suppress:  # lower case: a drop-in for contextlib.suppress
    """contextlib.suppress without contextlib, which costs the path 3.5 ms (with os,
    collections, functools and what they load)."""

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self.exceptions = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, self.exceptions)


# ----------------------------------------------------------------------------------- the record
# `import json` costs the path 6.9 ms (json.decoder imports re); its C half `_json` 0.2 ms. The
# path reads one key of one record per start.


class _Defaults:
    """What _json's C scanner reads off a json.JSONDecoder: the settings of plain json.loads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def loads(text: str) -> Any:
    """json.loads(TEXT) for any TEXT: the same value, or json's own JSONDecodeError.

    Valid JSON is scanned by the json module's C scanner (what json.loads itself runs) without
    importing json. Anything the scanner does not take whole goes to json.loads, which then gives
    the error with its position. (The scanner cannot report errors itself here: it raises them
    through json.decoder, and without it loaded it fails with a SystemError.)"""
    stripped = text.strip(" \t\n\r")  # the whitespace json skips around a document
    try:
        import _json

        value, end = _json.make_scanner(_Defaults)(stripped, 0)  # type: ignore[arg-type]
        if end == len(stripped):
            return value
    except Exception:  # any failure: json.loads below says what it is
        pass
    import json

    return json.loads(text)


def record_path(ns: str) -> str:
    return f"{RECORD_DIR}/{ns}.json"


def record_phase(ns: str) -> str | None:
    """The "phase" of NS's record ("starting", "up", "stopping" ...); None when it has none.

    A record that cannot be read or is not a JSON object with a string "phase" (truncated,
    edited) is a WgnsError naming the file and what to do."""
    path = record_path(ns)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise WgnsError(f"cannot read the state record {path}: {e.strerror}") from e
    try:
        value = loads(raw.decode("utf-8"))
    except ValueError as e:  # not UTF-8 (a UnicodeDecodeError is a ValueError), not JSON
        raise DamagedRecord(path, str(e)) from e
    if not isinstance(value, dict):
        raise DamagedRecord(path, "not a JSON object")
    phase = value.get("phase")
    if not isinstance(phase, str):
        raise DamagedRecord(path, "no phase")
    return phase
