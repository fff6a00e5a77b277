"""Sysctls of the main namespace that several wgns namespaces may need at once.

A *hold* is a file per holder under ``/run/wgns/claims/sysctl-KEY.d/``: the first holder of KEY
records the value it had before (``sysctl-KEY.orig``) and sets the new one; the last one to
let go restores the recorded value. Holders are namespaces; a namespace that holds KEY for
several reasons (two forwards that need forwarding on the same interface) is one holder, and
lets go only when no reason is left (the caller knows: see wgns.features.forward.ops).

Keys are in slash form (``net/ipv4/conf/IF/forwarding``): interface names may contain dots.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from wgns.system import fsutil

HOLDS_DIR = Path("/run/wgns/claims")
LOCK_FILE = Path("/run/wgns/claims.lock")


def path_of(key: str) -> Path:
    return Path("/proc/sys") / key


def get(key: str) -> str:
    return path_of(key).read_text().strip()


def put(key: str, value: str) -> None:
    path_of(key).write_text(value + "\n")


def forwarding_key(dev: str) -> str:
    """The IPv4 forwarding switch of interface DEV (it decides for packets arriving on DEV)."""
    return f"net/ipv4/conf/{dev}/forwarding"


def _make_run_dir() -> None:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """The claims lock; its file is removed on the way out (wgns.system.fsutil.lock_file)."""
    fd = fsutil.lock_file(LOCK_FILE, make_dir=_make_run_dir)
    try:
        yield
    finally:
        try:  # unlinked while still held: a waiter on this file then sees it is gone
            with contextlib.suppress(OSError):
                LOCK_FILE.unlink()
        finally:
            os.close(fd)


def _holders_dir(key: str) -> Path:
    return HOLDS_DIR / f"sysctl-{key.replace('/', '%')}.d"


def _orig_file(key: str) -> Path:
    return HOLDS_DIR / f"sysctl-{key.replace('/', '%')}.orig"


def holders(key: str) -> list[str]:
    try:
        return sorted(os.listdir(_holders_dir(key)))
    except FileNotFoundError:
        return []


def hold(key: str, value: str, owner: str) -> str:
    """Set KEY to VALUE for OWNER; return the value KEY had before any holder set it."""
    with _locked():
        d = _holders_dir(key)
        orig_file = _orig_file(key)
        d.mkdir(parents=True, exist_ok=True)
        if not orig_file.exists():
            orig_file.write_text(get(key))
        (d / owner).write_text(value)
        put(key, value)
        return orig_file.read_text()


def release(key: str, owner: str) -> None:
    """OWNER lets go of KEY; the last holder restores the value recorded by the first. A key
    whose interface is gone is forgotten quietly (nothing left to restore)."""
    with _locked():
        d = _holders_dir(key)
        with contextlib.suppress(FileNotFoundError):
            (d / owner).unlink()
        if holders(key):
            return
        with contextlib.suppress(FileNotFoundError):
            orig = _orig_file(key).read_text()
            with contextlib.suppress(FileNotFoundError):  # the interface may be gone
                put(key, orig)
            _orig_file(key).unlink()
        with contextlib.suppress(OSError):
            d.rmdir()
        with contextlib.suppress(OSError):
            HOLDS_DIR.rmdir()  # only when empty
