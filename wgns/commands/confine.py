"""`wgns confine UNIT NS`, `wgns confine --remove UNIT` and the hidden `wgns systemd-generator`
(wgns.integrations.systemd: confine, generator)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def register(
    sub: argparse._SubParsersAction[Any],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "confine",
        help="run an existing systemd service inside a namespace (a drop-in)",
        description="Put systemd service UNIT, unchanged, into namespace NS: a drop-in "
        "/etc/systemd/system/UNIT.d/wgns-confine.conf makes it start with wgns@NS.service, "
        "inside NS, with NS's resolv.conf, hosts and nsswitch.conf and no host resolver "
        "(nscd, systemd-resolved, avahi, D-Bus). `--remove UNIT` takes it out again. "
        "systemd is reloaded for you; a running UNIT needs `systemctl restart UNIT`.",
    )
    common(p)
    p.add_argument("--remove", action="store_true", help="remove the drop-in of UNIT")
    p.add_argument("unit", metavar="UNIT", help="a service (NAME means NAME.service)")
    p.add_argument("ns", metavar="NS", nargs="?", help="the namespace (its profile's name)")
    p.set_defaults(func=run_confine)

    g = sub.add_parser("systemd-generator")  # no help=: not listed in `wgns --help`
    g.add_argument("dirs", nargs="*", metavar="DIR")
    g.set_defaults(func=run_generator)


def run_confine(args: argparse.Namespace) -> int:
    from wgns.errors import ConfigError
    from wgns.integrations.systemd import confine

    if args.remove:
        if args.ns is not None:
            raise ConfigError("--remove takes only UNIT", hint="wgns confine --remove UNIT")
        notes = confine.remove(args.unit)
    else:
        if args.ns is None:
            raise ConfigError("which namespace?", hint="wgns confine UNIT NS")
        notes = confine.confine(args.unit, args.ns)
    for line in notes:
        print(f"wgns: {line}", file=sys.stderr)
    return 0


def run_generator(args: argparse.Namespace) -> int:
    from wgns.integrations.systemd import generator

    return generator.main(list(args.dirs))
