"""Messages to stderr: `[#] op` lines with --debug, notes and warnings always.

A dozen lines instead of the logging package, whose import costs more than a whole `wgns down`
on a slow machine; every command pays its start-up time.
"""

from __future__ import annotations

import sys

_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug


def debug(fmt: str, *args: object) -> None:
    if _debug:
        print(fmt % args if args else fmt, file=sys.stderr, flush=True)


def info(fmt: str, *args: object) -> None:
    print(fmt % args if args else fmt, file=sys.stderr, flush=True)


warning = info
