"""`wgns physical up|down|status|exec` and `wgns recover` (docs/physical.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from wgns.errors import WgnsError

_DESCRIPTION = """\
Physical mode: the machine's interfaces (those carrying the default routes and every wireless
phy, or the --iface ones) move into a namespace of their own (`physical`), where a DHCP client
runs; the WireGuard tunnel is born there and lives in the main namespace, where every ordinary
program sees only lo and the tunnel. `down` gives everything back as it was."""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    from wgns.lifecycle.physical import DEFAULT_DEADMAN, DEFAULT_NAME

    p = sub.add_parser(
        "physical", help="the whole machine through the tunnel", description=_DESCRIPTION
    )
    common(p)
    psub = p.add_subparsers(dest="physical_command", metavar="ACTION")
    psub.required = True

    up = psub.add_parser("up", help="move the interfaces out and bring the tunnel up")
    common(up)
    up.add_argument("profile", metavar="PROFILE")
    up.add_argument("--name", default=DEFAULT_NAME, metavar="NS", help="default: physical")
    up.add_argument(
        "--iface",
        action="append",
        default=[],
        metavar="IF",
        help="an interface to move (repeatable; default: the default routes' and wireless)",
    )
    up.add_argument(
        "--deadman",
        type=float,
        default=DEFAULT_DEADMAN,
        metavar="SECONDS",
        help="give everything back when no handshake comes within SECONDS (0: off; default 30)",
    )
    up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    up.set_defaults(func=cmd_up)

    down = psub.add_parser("down", help="give the interfaces back, as they were")
    common(down)
    down.add_argument("--name", default=DEFAULT_NAME, metavar="NS")
    down.set_defaults(func=cmd_down)

    st = psub.add_parser("status", help="what physical mode moved, the tunnel, the daemons")
    common(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ex = psub.add_parser(
        "exec",
        help="run a command inside the physical namespace as you (captive portals)",
        usage="wgns physical exec [--name NS] [--user U] [--if-up] [--] CMD [ARGS...]",
    )
    common(ex)
    ex.add_argument("--name", default=DEFAULT_NAME, metavar="NS")
    ex.add_argument("-u", "--user", metavar="USER")
    ex.add_argument(
        "--if-up",
        action="store_true",
        help="inside the physical namespace if it is up, else right here",
    )
    ex.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    ex.set_defaults(func=cmd_exec)

    r = sub.add_parser(
        "recover",
        help="give back every interface physical mode holds (from a console, no network needed)",
        description="Undo every physical-mode record under /run/wgns: interfaces moved back by "
        "name with their addresses, routes and MTU, daemons stopped, DNS and kill switch gone.",
    )
    common(r)
    r.set_defaults(func=cmd_recover)


def cmd_up(args: argparse.Namespace) -> int:
    from wgns.lifecycle import physical
    from wgns.lifecycle.up import load

    profile = load(args.profile, name=args.name, backend=None)
    ifaces = tuple(args.iface)
    if args.dry_run:
        from wgns.engine.plan import render

        for line in render(physical.dry_run(profile, ifaces, deadman=args.deadman)):
            print(line)
        return 0
    rec = physical.up(profile, ifaces, deadman=args.deadman)
    moved = [*rec.extra.get("physical_links", []), *rec.extra.get("physical_phys", {})]
    tunnel = ", ".join(str(i["ifname"]) for i in rec.interfaces)
    print(
        f"wgns: {rec.ns}: {', '.join(moved)} moved into {rec.ns}; {tunnel} is this namespace's "
        f"only way out"
    )
    if args.deadman > 0:
        print(f"wgns: {rec.ns}: no handshake within {args.deadman:g}s gives everything back")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from wgns.lifecycle import physical

    errors = physical.down(args.name)
    if errors is None:
        print(f"wgns: {args.name}: physical mode is not up: nothing to give back")
        return 0
    if errors:
        for e in errors:
            print(f"wgns: {args.name}: {e}", file=sys.stderr)
        raise WgnsError(
            f"{args.name} is only partly given back ({len(errors)} error(s) above)",
            hint="fix them, then `wgns physical down` again (or `wgns recover`)",
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from wgns.engine import state
    from wgns.lifecycle import physical

    shown = []
    for ns in physical.physical_records():
        rec = state.load(ns)
        if rec is not None:
            shown.append(physical.status_data(rec))
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    if not shown:
        print("physical mode is off")
        return 0
    for d in shown:
        hs = d["latest_handshake"]
        age = f"{int(time.time() - hs)}s ago" if hs else "none yet"
        moved = [*d["links"], *(f"{p} ({', '.join(n)})" for p, n in d["phys"].items())]
        print(f"{d['ns']}: {d['phase']}")
        print(f"  moved into {d['ns']}: {', '.join(moved)}")
        print(f"  tunnel: {', '.join(d['tunnel'])}, latest handshake {age}")
        for name, alive in d["daemons"].items():
            print(f"  {name}: {'running' if alive else 'NOT RUNNING'} inside {d['ns']}")
        print(f"  dead-man switch: {d['deadman']}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from wgns.commands import exec as execcmd

    words = list(args.cmd)
    if words[:1] == ["--"]:
        words = words[1:]
    if not words:
        raise WgnsError("no command given", hint="wgns physical exec -- firefox")
    execcmd.run(args.name, words, user=args.user, if_up=args.if_up)


def cmd_recover(args: argparse.Namespace) -> int:
    from wgns.lifecycle import physical

    done = physical.recover()
    if not done:
        print("wgns: nothing to recover: no physical-mode record under /run/wgns")
        return 0
    failed = False
    for ns, errors in done:
        if errors:
            failed = True
            for e in errors:
                print(f"wgns: {ns}: {e}", file=sys.stderr)
        else:
            print(f"wgns: {ns}: given back")
    if failed:
        raise WgnsError(
            "not everything was given back", hint="fix the errors above and run it again"
        )
    return 0
