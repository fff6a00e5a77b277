"""`wgns status [NS] [--format text|json|i3bar|waybar] [--watch [--interval S]]`: what wgns
manages, read from the state record and the kernel (root), or from the status files
(wgns.features.statusfile) that any user may read.

The JSON schema (format 1) is documented in docs/status.md; fields are only ever added.
Private keys never appear: `wg show dump` is parsed and its private key dropped. Run as root,
every form refreshes the status files of what it reads; the bar formats (wgns.commands.statusbar)
are built from those files in both cases, so root and a user's bar show the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from wgns.engine import state
from wgns.errors import UsageError, WgnsError
from wgns.system import netns

# wgns.features.check and .forward are imported where they are used: a user's status bar runs
# `wgns status --format i3bar` every few seconds and needs neither (half its start-up time)

FORMAT = 1
FORMATS = ("text", "json", "i3bar", "waybar")
WATCH_INTERVAL = 5.0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "status",
        help="show managed namespaces, tunnels and peers",
        description="Show what wgns manages. As root: read from the records and the kernel, "
        "and refresh the status files under /run/wgns/status. Without root: read those files "
        "(no keys, no endpoints) and say how old they are. --format i3bar|waybar gives a "
        "status bar's blocks (docs/status.md).",
    )
    common(p)
    p.add_argument("ns", metavar="NS", nargs="?")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default), json (docs/status.md), i3bar (a status_command's blocks) or "
        "waybar (a custom module's JSON, return-type json)",
    )
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument(
        "--watch",
        action="store_true",
        help="with --format i3bar or waybar: keep printing, every --interval seconds "
        "(i3bar: the protocol's header, then an endless array)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=WATCH_INTERVAL,
        metavar="S",
        help=f"seconds between two lines of --watch (default {WATCH_INTERVAL:g})",
    )
    p.set_defaults(func=cmd_status)


def _addresses(ns: str) -> dict[str, dict[str, Any]]:
    from wgns.features import statusfile

    try:
        return statusfile.links_of(ns) if netns.exists(ns) else {}
    except WgnsError:  # the namespace went away meanwhile: what is missing says so
        return {}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def describe(ns: str) -> dict[str, Any]:
    from wgns.features.check import health
    from wgns.features.forward import runtime as forward

    rec = state.load(ns)
    if rec is None:
        raise WgnsError(f"{ns} is not managed by wgns", hint="see `wgns status` for the list")
    if rec.extra.get("kind") == "physical":  # its tunnel lives in the main namespace
        from wgns.lifecycle import physical

        return {"name": ns, "kind": "physical", **physical.status_data(rec)}
    links = _addresses(ns)
    daemons = health.daemons(rec)
    backend = health.backend_of(rec)
    interfaces = []
    for entry in rec.interfaces:
        ifname = entry["ifname"]
        dev = backend.read(ifname, ns if netns.exists(ns) else None) if backend else None
        link = links.get(ifname)
        d = daemons.get(ifname)
        daemon = None if d is None else {"pid": d.pid, "alive": d.alive}
        interfaces.append(
            {
                "label": entry["label"],
                "ifname": ifname,
                "present": link is not None,
                "up": bool(link and link["up"]),
                "addresses": link["addresses"] if link else [],
                "mtu": link["mtu"] if link else None,
                "public_key": dev.public_key if dev else None,
                "listen_port": dev.listen_port if dev else None,
                "daemon": daemon,
                "peers": [
                    {
                        "public_key": p.public_key,
                        "endpoint": p.endpoint,
                        "allowed_ips": list(p.allowed_ips),
                        "latest_handshake": p.latest_handshake,
                        "rx_bytes": p.rx_bytes,
                        "tx_bytes": p.tx_bytes,
                        "persistent_keepalive": p.persistent_keepalive,
                        "preshared_key": p.has_preshared_key,
                    }
                    for p in (dev.peers if dev else ())
                ],
            }
        )
    pids = netns.pids_inside(ns)
    forwards = [{k: v for k, v in row.items() if k != "ns"} for row in forward.rows_of(ns, rec)]
    broken = health.problems(rec, {n: link["up"] for n, link in links.items()})
    return {
        "name": ns,
        "kind": "tunnel",
        "phase": rec.phase,
        "broken": broken,
        "owner": "wgns" if rec.created_ns else "pre-existing",
        "exists": netns.exists(ns),
        "backend": rec.backend,
        "birthplace": rec.birthplace,
        "container": rec.extra.get("container"),  # --pid/--container: whose namespace it is
        "profile": rec.profile,
        "kill_switch": rec.kill_switch,
        "ipv6": rec.ipv6,
        "started_at": rec.started_at,
        "interfaces": interfaces,
        "forwards": forwards,
        "processes": [{"pid": p, "comm": _comm(p)} for p in pids],
    }


def _ago(ts: int) -> str:
    if ts == 0:
        return "never"
    s = int(time.time()) - ts
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


def render(ns: dict[str, Any]) -> str:
    from wgns.features.check import health

    if ns.get("kind") == "physical":
        hs = ns.get("latest_handshake") or 0
        return (
            f"namespace {ns['name']}: physical mode, {ns['phase']}: "
            f"{', '.join(ns['links'] + list(ns['phys'])) or 'no interface'} moved in, tunnel "
            f"{', '.join(ns['tunnel']) or '(none)'} in the main namespace, handshake {_ago(hs)} "
            "(`wgns physical status` for the rest)"
        )
    broken = ns.get("broken") or []
    shown_phase = f"BROKEN (recorded {ns['phase']})" if broken else ns["phase"]
    lines = [
        f"namespace {ns['name']}: {shown_phase}"
        + ("" if ns["exists"] else " (namespace missing!)")
        + f", {ns['backend']}, kill switch {'on' if ns['kill_switch'] else 'OFF'}, "
        f"IPv6 {ns['ipv6']}",
        "  owner: "
        + ("created by wgns" if ns["owner"] == "wgns" else "pre-existing (left in place by down)")
        + (f", birthplace {ns['birthplace']}" if ns["birthplace"] else ""),
    ]
    if ns.get("container"):
        c = ns["container"]
        whose = f"container {c['container']} ({c['engine']})" if c.get("container") else "process"
        lines.append(f"  namespace of: {whose}, pid {c['pid']}")
    lines += [f"  broken: {why}" for why in broken]
    if broken:
        lines.append(f"  fix: {health.fix_hint(ns['name'])}")
    for i in ns["interfaces"]:
        state_txt = "up" if i["up"] else ("down" if i["present"] else "MISSING")
        lines.append(
            f"  interface {i['ifname']} ({i['label']}): {state_txt}, mtu {i['mtu']}, "
            f"{' '.join(i['addresses']) or 'no address'}"
        )
        if i["daemon"] is not None:
            d = i["daemon"]
            lines.append(
                f"    daemon: wireguard-go pid {d['pid']} {'running' if d['alive'] else 'DEAD'}"
            )
        for p in i["peers"]:
            lines.append(
                f"    peer {p['public_key']}: endpoint {p['endpoint'] or '-'}, "
                f"handshake {_ago(p['latest_handshake'])}, "
                f"rx {_size(p['rx_bytes'])}, tx {_size(p['tx_bytes'])}"
            )
            lines.append(f"      allowed ips: {', '.join(p['allowed_ips']) or '-'}")
    for f in ns["forwards"]:
        via = f["mode"]
        if f.get("relay") is not None:
            via += f", relay pid {f['relay']['pid']} {'running' if f['relay']['alive'] else 'DEAD'}"
        lines.append(
            f"  forward {f['proto']} {f['host_port']} -> {ns['name']}:{f['ns_port']} "
            f"({via}; from {', '.join(f['from'])})"
        )
    procs = ns["processes"]
    lines.append(
        f"  processes: {len(procs)}"
        + (": " + ", ".join(f"{p['comm']}[{p['pid']}]" for p in procs[:8]) if procs else "")
    )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    if args.json and args.format not in ("text", "json"):
        raise UsageError(f"--json and --format {args.format} do not go together")
    fmt = "json" if args.json else args.format
    if args.watch and fmt not in ("i3bar", "waybar"):
        raise UsageError("--watch goes with --format i3bar or --format waybar")
    if not args.interval > 0:
        raise UsageError("--interval must be positive (seconds)")
    if args.ns is not None:
        netns.validate_name(args.ns)
    if fmt in ("i3bar", "waybar"):
        from wgns.commands import statusbar

        return statusbar.run(fmt, args.ns, watch=args.watch, interval=args.interval)
    if os.geteuid() != 0:
        from wgns.commands import statusbar

        return statusbar.print_published(args.ns, as_json=fmt == "json")
    names = [args.ns] if args.ns is not None else state.managed()
    described = [describe(n) for n in names]
    from wgns.features import statusfile

    for d in described:
        statusfile.publish_described(d)
    if fmt == "json":
        json.dump({"format": FORMAT, "namespaces": described}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not described:
        print("no namespaces managed by wgns")
    else:
        print("\n".join(render(d) for d in described))
    return 0
