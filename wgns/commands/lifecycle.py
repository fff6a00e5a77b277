"""`wgns up` and `wgns down`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from wgns import netns
from wgns.errors import WgnsError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "up",
        help="bring a confined namespace up from a profile",
        description="Create a network namespace whose only way out is the profile's WireGuard "
        "tunnel. PROFILE is a wg-quick .conf or a wgns .toml path, or a NAME found as "
        "/etc/wgns/NAME.toml or /etc/wgns/NAME.conf.",
    )
    common(p)
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument("--name", metavar="NS", help="namespace name (default: the profile's)")
    p.add_argument("--backend", choices=["auto", "kernel", "userspace"], default=None)
    p.add_argument(
        "--reload",
        action="store_true",
        help="when already up, apply key and peer changes without dropping the tunnel",
    )
    p.set_defaults(func=cmd_up)

    d = sub.add_parser("down", help="remove everything wgns created for a namespace")
    common(d)
    d.add_argument("ns", metavar="NS")
    d.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    from wgns import lifecycle

    profile = lifecycle.load(args.profile, name=args.name, backend=args.backend)
    result = lifecycle.up(profile, reload=args.reload)
    if result.already_up:
        what = (
            "reloaded"
            if args.reload
            else "already up (nothing changed; --reload applies peer changes)"
        )
        print(f"wgns: {result.ns} is {what}", file=sys.stderr)
    else:
        print(
            f"wgns: {result.ns} is up ({result.backend}, {', '.join(result.ifnames)})",
            file=sys.stderr,
        )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from wgns import teardown  # not lifecycle: down needs none of up's parsing and planning

    was_managed, errors = teardown.down(args.ns)
    if not was_managed:
        if netns.exists(args.ns):
            print(f"wgns: {args.ns} is not managed by wgns; left alone", file=sys.stderr)
        else:
            print(f"wgns: {args.ns} is not up", file=sys.stderr)
        return 0
    if errors:
        for e in errors:
            print(f"wgns: down {args.ns}: {e}", file=sys.stderr)
        raise WgnsError(
            f"{args.ns} was only partly removed ({len(errors)} error(s) above)",
            hint=f"fix them and run `wgns down {args.ns}` again",
        )
    left = teardown.leftover_processes(args.ns)
    if left:
        print(
            f"wgns: note: {len(left)} process(es) still in {args.ns} have lost their network "
            f"(pids {' '.join(map(str, left[:10]))})",
            file=sys.stderr,
        )
    return 0
