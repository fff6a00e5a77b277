"""`wgns strip FILE`: print a wg-quick .conf without the keys only wg-quick reads.

The output is byte-for-byte what `wg-quick strip FILE` prints, so scripts written for one work
with the other; unlike wg-quick, any file name is fine. The file is handled as bytes (decoded
with surrogateescape) because wg-quick runs with LC_ALL=C and passes any byte through.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wgns.errors import ConfigError
from wgns.profile.load import resolve_profile_path
from wgns.profile.wgconf import strip_conf


def register(
    sub: argparse._SubParsersAction[Any],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "strip",
        help="print a .conf without wg-quick-only keys (as wg-quick strip)",
        description="Print FILE without the keys only wg-quick reads (Address, DNS, MTU, Table, "
        "hooks, SaveConfig), exactly as `wg-quick strip` does: the result is `wg setconf` input. "
        "A NAME without '/' or suffix means /etc/wgns/NAME.conf.",
    )
    common(p)
    p.add_argument("file", metavar="FILE", help="a wg-quick .conf file, or a profile NAME")
    p.set_defaults(func=run_strip)


def run_strip(args: argparse.Namespace) -> int:
    path = resolve_profile_path(args.file)
    if Path(path).suffix == ".toml":
        raise ConfigError(
            "is a TOML profile; strip works on wg-quick .conf files",
            path=path,
            hint="name the .conf file",
        )
    data = _read(path)
    text = data.decode("utf-8", "surrogateescape")
    out = strip_conf(text, path=path).encode("utf-8", "surrogateescape")
    sys.stdout.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=path) from None
