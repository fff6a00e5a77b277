"""The few libc calls Python 3.11's os module lacks: setns, unshare, mount, umount2, prctl,
capset and raw syscall(2).

The one libc binding of wgns. Built on ``_ctypes``, the C half of ctypes, rather than ``ctypes``
itself, because `wgns exec` (wgns.system.startup) binds these on every start: the pure-Python
half defines a hundred classes and imports struct, and costs ~2.6 ms more (`python3.11 -I -S -X
importtime -c 'import ctypes'`: 3.8 ms against 1.2 ms for _ctypes) of a budget of ~15 ms. What is
used here is exactly what ctypes.CDLL does underneath: dlopen(NULL), a CFuncPtr subclass with
errno capture, and _SimpleCData argument types, so that each argument is passed with its C type;
tests/system/test_libc.py checks it against ctypes itself.
"""

from __future__ import annotations

import _ctypes as _ctypes_module
import posix
import sys

from wgns.system.startup import fsencode

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wgns.system.startup)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# typeshed describes ctypes' public classes, not the C half they are built from
_ctypes: Any = _ctypes_module


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _UInt(_ctypes._SimpleCData):
    _type_ = "I"


class _Long(_ctypes._SimpleCData):
    _type_ = "l"


class _ULong(_ctypes._SimpleCData):
    _type_ = "L"


class _CharP(_ctypes._SimpleCData):
    _type_ = "z"  # char *: bytes or None


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Process:
    """The symbols already loaded in this process, as ctypes.CDLL(None) finds them."""

    _handle = _ctypes.dlopen(None, posix.RTLD_LOCAL)


def _function(name: str, restype: type, *argtypes: type) -> Callable[..., int]:
    fn = _Function((name, _Process))
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_setns = _function("setns", _Int, _Int, _Int)
_unshare = _function("unshare", _Int, _Int)
_mount = _function("mount", _Int, _CharP, _CharP, _CharP, _ULong, _CharP)
_umount2 = _function("umount2", _Int, _CharP, _Int)
_prctl = _function("prctl", _Int, _Int, _ULong, _ULong, _ULong, _ULong)
_capset = _function("capset", _Int, _CharP, _CharP)
_syscall_open_tree = _function("syscall", _Long, _Long, _Int, _CharP, _UInt)
_syscall_move_mount = _function("syscall", _Long, _Long, _Int, _CharP, _Int, _CharP, _UInt)

SYS_OPEN_TREE = 428  # the same on every architecture but alpha (unified syscall table)
SYS_MOVE_MOUNT = 429
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _fail(what: str) -> OSError:
    err = _ctypes.get_errno()
    return OSError(err, f"{what}: {posix.strerror(err)}")


def _encode(s: str | None) -> bytes | None:
    return None if s is None else fsencode(s)


def setns(fd: int, nstype: int = 0) -> None:
    if _setns(fd, nstype) != 0:
        raise _fail("setns")


def unshare(flags: int) -> None:
    if _unshare(flags) != 0:
        raise _fail("unshare")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    if _mount(_encode(source), fsencode(target), _encode(fstype), flags, _encode(data)) != 0:
        raise _fail(f"mount {target}")


def umount2(target: str, flags: int) -> None:
    if _umount2(fsencode(target), flags) != 0:
        raise _fail(f"umount {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    if _prctl(option, arg2, arg3, arg4, arg5) != 0:
        raise _fail(f"prctl({option})")


def capset_empty() -> None:
    """capset(2) with empty effective, permitted and inheritable sets (both 32-bit words)."""
    header = b"".join(
        n.to_bytes(4, sys.byteorder, signed=True) for n in (_LINUX_CAPABILITY_VERSION_3, 0)
    )
    if _capset(header, bytes(24)) != 0:  # 2 x {effective, permitted, inheritable}
        raise _fail("capset")


def open_tree(path: str, flags: int) -> int:
    fd = _syscall_open_tree(SYS_OPEN_TREE, -100, fsencode(path), flags)  # -100: AT_FDCWD
    if fd < 0:
        raise _fail(f"open_tree {path}")
    return fd


def move_mount_fd(fd: int, target: str, flags: int) -> None:
    """move_mount(2) of the detached tree FD onto TARGET (relative to the cwd)."""
    if _syscall_move_mount(SYS_MOVE_MOUNT, fd, b"", -100, fsencode(target), flags) != 0:
        raise _fail(f"move_mount {target}")
