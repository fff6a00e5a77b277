"""`wgns forward add|remove|list`: publish services of a confined namespace (docs/forwards.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from wgns.features.forward import runtime, spec
from wgns.profile.model import Proto
from wgns.system import netns


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "forward",
        help="publish a service of a namespace on the host",
        description="Publish a port of a service inside NS on the host: from the host itself "
        "(127.0.0.1 and [::1]) by default, from other sources with --from. See docs/forwards.md.",
    )
    common(p)
    fsub = p.add_subparsers(dest="forward_command", metavar="SUBCOMMAND", parser_class=type(p))
    fsub.required = True

    a = fsub.add_parser("add", help="publish HOST_PORT of the host as NS_PORT inside NS")
    common(a)
    a.add_argument("ns", metavar="NS")
    a.add_argument("ports", metavar="HOST_PORT[:NS_PORT]")
    a.add_argument("--proto", choices=[x.value for x in Proto], default="tcp")
    a.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="CIDR",
        help="who may connect (repeatable; default: 127.0.0.0/8 and ::1, the host itself)",
    )
    a.add_argument(
        "--mode",
        choices=["nat", "relay"],
        default="nat",
        help="nat: veth + nft DNAT (default); relay: the built-in userspace relay",
    )
    a.set_defaults(func=cmd_add)

    r = fsub.add_parser("remove", help="stop publishing HOST_PORT")
    common(r)
    r.add_argument("ns", metavar="NS")
    r.add_argument("host_port", metavar="HOST_PORT")
    r.add_argument("--proto", choices=[x.value for x in Proto], default="tcp")
    r.set_defaults(func=cmd_remove)

    ls = fsub.add_parser("list", help="show the forwards of NS (default: of every namespace)")
    common(ls)
    ls.add_argument("ns", metavar="NS", nargs="?")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)


def _describe(d: dict[str, object]) -> str:
    return f"{d['proto']} {d['host_port']} -> {d['ns']}:{d['ns_port']}"


def cmd_add(args: argparse.Namespace) -> int:
    netns.validate_name(args.ns)
    fwd = spec.make_forward(args.ports, proto=args.proto, sources=args.sources, mode=args.mode)
    done = runtime.add(args.ns, fwd)
    srcs = ", ".join(str(s) for s in fwd.sources)
    print(
        f"wgns: {args.ns}: {fwd.proto.value} port {fwd.host_port} -> {fwd.ns_port} "
        f"({fwd.mode.value}, from {srcs}): {done}",
        file=sys.stderr,
    )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    netns.validate_name(args.ns)
    hp, _ = spec.parse_ports(args.host_port)
    runtime.remove(args.ns, hp, Proto(args.proto))
    print(f"wgns: {args.ns}: {args.proto} port {hp} no longer published", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.ns is not None:
        netns.validate_name(args.ns)
    rows = runtime.listing(args.ns)
    if args.json:
        json.dump({"format": 1, "forwards": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no forwards")
        return 0
    for d in rows:
        how = str(d["mode"])
        relay = d.get("relay")
        if isinstance(relay, dict):
            if relay["alive"]:
                how += f", relay pid {relay['pid']} running"
            else:
                how += (
                    f", relay pid {relay['pid']} DEAD (log: {relay['log']}; "
                    f"`wgns forward add` it again to restart it)"
                )
        srcs = d["from"]
        assert isinstance(srcs, list)
        print(f"{_describe(d)}  ({how}; from {', '.join(srcs)})")
    return 0
