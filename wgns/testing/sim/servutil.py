"""Helpers shared by the simulation's servers, chosen for a fast start (no argparse, no json).

The servers run as plain scripts (``python -E -s -S path/to/dnsserver.py``) with this file
imported as a sibling, so it must stay stdlib-only and import nothing heavy.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Sequence


def json_line(**fields: str | int) -> str:
    """One JSON object (string and int values) without importing json (a faster start)."""

    def enc(v: str | int) -> str:
        if isinstance(v, int):
            return str(v)
        return (
            '"'
            + "".join(c if " " <= c < "\x7f" and c not in '"\\' else f"\\u{ord(c):04x}" for c in v)
            + '"'
        )

    return "{" + ", ".join(f"{enc(k)}: {enc(v)}" for k, v in fields.items()) + "}"


class Args:
    """Parsed command line: repeatable options (lists), flags, single values."""

    def __init__(self) -> None:
        self.lists: dict[str, list[str]] = {}
        self.flags: set[str] = set()
        self.values: dict[str, str] = {}

    def list(self, name: str) -> list[str]:
        return self.lists.get(name, [])

    def flag(self, name: str) -> bool:
        return name in self.flags

    def value(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)


def parse_args(
    argv: Sequence[str],
    usage: str,
    *,
    multi: Sequence[str] = (),
    flags: Sequence[str] = (),
    single: Sequence[str] = (),
) -> Args:
    """A tiny argv parser (importing argparse costs more start-up time than the whole server).

    Accepts ``--opt VALUE`` and ``--opt=VALUE``; ``-h``/``--help`` prints USAGE and exits."""
    out = Args()
    args = list(argv)
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(usage)
            raise SystemExit(0)
        name, eq, val = a.partition("=")
        if name in flags and not eq:
            out.flags.add(name)
            continue
        if name not in multi and name not in single:
            sys.exit(f"{usage}\nunknown argument: {a}")
        if not eq:
            if not args:
                sys.exit(f"{usage}\n{name} needs a value")
            val = args.pop(0)
        if name in multi:
            out.lists.setdefault(name, []).append(val)
        else:
            out.values[name] = val
    return out


IP_FREEBIND = 15  # linux/in.h: bind before the address exists (servers start before links)
IPV6_FREEBIND = 78


def bind_socket(family: int, kind: int, addr: str, port: int) -> socket.socket:
    """A server socket on ADDR:PORT; TCP ones listening."""
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    return s
