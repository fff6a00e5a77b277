"""Messages to stderr: `[#] op` lines with --debug, notes and warnings always.

A dozen lines instead of the logging package, whose import costs more than a whole `wgns down`
on a slow machine; every command pays its start-up time.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # as in wgns.cli: no typing before a parser is built
if TYPE_CHECKING:
    import argparse

_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


def debug(fmt: str, *args: object) -> None:
    if _debug:
        print(fmt % args if args else fmt, file=sys.stderr, flush=True)


def info(fmt: str, *args: object) -> None:
    print(fmt % args if args else fmt, file=sys.stderr, flush=True)


warning = info


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """`--debug` on PARSER: the top level and every command take it (wgns.cli reads it
    wherever it is; SUPPRESS keeps a command's parser from resetting the top level's)."""
    import argparse

    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show every operation as it is applied, and tracebacks",
    )
