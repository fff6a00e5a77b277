"""`wgns up` and `wgns down`."""

from __future__ import annotations

import sys

from wgns.errors import WgnsError
from wgns.system import netns

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


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
    return up(args.profile, name=args.name, backend=args.backend, reload=args.reload)


def cmd_down(args: argparse.Namespace) -> int:
    return down(args.ns)


def up(ref: str, *, name: str | None, backend: str | None, reload: bool) -> int:
    from wgns.lifecycle import up as lifecycle

    profile = lifecycle.load(ref, name=name, backend=backend)
    result = lifecycle.up(profile, reload=reload)
    if result.already_up:
        what = (
            "reloaded" if reload else "already up (nothing changed; --reload applies peer changes)"
        )
        print(f"wgns: {result.ns} is {what}", file=sys.stderr)
    else:
        print(
            f"wgns: {result.ns} is up ({result.backend}, {', '.join(result.ifnames)})",
            file=sys.stderr,
        )
    return 0


def down(ns: str) -> int:
    # not wgns.lifecycle.up: down needs none of up's parsing and planning
    from wgns.lifecycle import down as teardown

    was_managed, errors = teardown.down(ns)
    if not was_managed:
        if netns.exists(ns):
            print(f"wgns: {ns} is not managed by wgns; left alone", file=sys.stderr)
        else:
            print(f"wgns: {ns} is not up", file=sys.stderr)
        return 0
    if errors:
        for e in errors:
            print(f"wgns: down {ns}: {e}", file=sys.stderr)
        raise WgnsError(
            f"{ns} was only partly removed ({len(errors)} error(s) above)",
            hint=f"fix them and run `wgns down {ns}` again",
        )
    left = teardown.leftover_processes(ns)
    if left:
        print(
            f"wgns: note: {len(left)} process(es) still in {ns} have lost their network "
            f"(pids {' '.join(map(str, left[:10]))})",
            file=sys.stderr,
        )
    return 0
