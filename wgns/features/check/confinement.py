"""The confinement checks: interfaces, routes and the kill switch's nft table."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from wgns.features import killswitch
from wgns.features.check import health
from wgns.features.check.facts import Facts, journal_ruleset, link_kind, route_devs, route_text
from wgns.features.check.result import Result, verdict
from wgns.system import netns
from wgns.system.tools import run

_NOT_LEAVING = frozenset({"unreachable", "blackhole", "prohibit", "throw"})
_LO_TYPES = frozenset({"local", "broadcast", "multicast", "anycast"})


def check_interfaces(f: Facts) -> Result:
    if not netns.exists(f.ns):
        return verdict("interfaces", False, f"namespace {f.ns} does not exist")
    expected = ["lo", *f.wg_ifnames, *f.veths]
    present = {str(link["ifname"]): link for link in f.links}
    problems = []
    extra = sorted(set(present) - set(expected))
    if extra:
        kinds = [f"{n} ({link_kind(present[n]) or 'unknown kind'})" for n in extra]
        problems.append("unexpected: " + ", ".join(kinds))
    missing = [n for n in ["lo", *f.wg_ifnames] if n not in present]
    if missing:
        problems.append("missing: " + ", ".join(missing))
    backend = health.backend_of(f.rec)
    want_kind = backend.link_kind if backend is not None else None
    for n in f.wg_ifnames:
        link = present.get(n)
        if link is None:
            continue
        kind = link_kind(link)
        if want_kind and kind != want_kind:
            problems.append(f"{n} is a {kind or 'device of unknown kind'}, not {want_kind}")
        if "UP" not in link.get("flags", []):
            problems.append(f"{n} is down")
    if f.rec.phase != "up":
        problems.append(f"state record phase is {f.rec.phase!r}, not 'up'")
    problems += health.daemon_problems(f.rec) + health.birthplace_problems(f.rec)
    shown = ", ".join(
        f"{n} ({link_kind(present[n]) or 'loopback'})" if n != "lo" else "lo"
        for n in sorted(present, key=lambda n: (n != "lo", n))
    )
    if problems:
        return verdict("interfaces", False, "; ".join(problems) + f" (present: {shown})")
    return verdict("interfaces", True, f"{shown}; nothing else")


def _is_loopback_dst(dst: str) -> bool:
    try:
        net = ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return False
    return net.is_loopback


def route_verdict(r: dict[str, Any], wg_ifnames: Sequence[str], veths: Sequence[str]) -> str | None:
    """None when route R keeps traffic in the tunnel (or on lo), else why not."""
    rtype = str(r.get("type", "unicast"))
    if rtype in _NOT_LEAVING:
        return None
    devs = route_devs(r)
    if not devs:
        return "leaves through an unknown device"
    for dev in devs:
        if dev in wg_ifnames:
            continue
        if dev == "lo" and (rtype in _LO_TYPES or _is_loopback_dst(str(r.get("dst", "")))):
            continue
        if dev in veths:
            continue  # a declared forward's veth: what may pass is the kill switch's business
        return f"leaves through {dev}"
    return None


def check_routes(f: Facts) -> Result:
    if not netns.exists(f.ns):
        return verdict("routes", False, f"namespace {f.ns} does not exist")
    bad = []
    via_wg = []
    via_veth = []
    for r in f.routes:
        why = route_verdict(r, f.wg_ifnames, f.veths)
        if why is not None:
            bad.append(f"{route_text(r)} ({why})")
        elif str(r.get("type", "unicast")) == "unicast":
            devs = route_devs(r)
            if any(d in f.wg_ifnames for d in devs):
                via_wg.append(route_text(r))
            elif any(d in f.veths for d in devs):
                via_veth.append(route_text(r))
    if bad:
        return verdict(
            "routes", False, f"{len(bad)} route(s) not through the tunnel: " + "; ".join(bad)
        )
    if not via_wg:
        return verdict("routes", False, "no route through the tunnel at all")
    return verdict(
        "routes",
        True,
        f"{len(f.routes)} routes, all through {'/'.join(f.wg_ifnames)}, lo or a declared veth; "
        f"via the tunnel: {', '.join(via_wg[:6])}"
        + (" ..." if len(via_wg) > 6 else "")
        + (f"; over declared forward veths: {', '.join(via_veth)}" if via_veth else ""),
    )


def check_killswitch(f: Facts) -> Result:
    name = "killswitch"
    if not f.rec.kill_switch:
        return verdict(
            name, False, "the kill switch is disabled in the profile (kill_switch = false)"
        )
    if f.spec is None:
        return verdict(name, False, "the state record does not say which table to expect")
    if not netns.exists(f.ns):
        return verdict(name, False, f"namespace {f.ns} does not exist")
    table = f.spec.table
    # rendered from the recorded spec (kept current by `wgns forward`), else as journaled
    if "killswitch" in f.rec.extra:
        rendered = f.spec.render()
    else:
        rendered = journal_ruleset(f.rec, table) or f.spec.render()
    live = killswitch.live(table, ns=f.ns)
    if live is None:
        return verdict(name, False, f"table {killswitch.FAMILY} {table} is missing")
    expected = killswitch.normalize(killswitch.canonical(rendered, table))
    actual = killswitch.normalize(live)
    if expected != actual:
        d = killswitch.diff(expected, actual)
        shown = "; ".join(d[:6]) + (f"; ... ({len(d) - 6} more)" if len(d) > 6 else "")
        return verdict(name, False, f"table {killswitch.FAMILY} {table} was changed: {shown}")
    foreign = _foreign_tables(f.ns, table)
    seal = next((ln for ln in actual if ln.startswith("comment ")), "")
    digest = seal.split("sha256:", 1)[1].split(";", 1)[0] if "sha256:" in seal else "?"
    evidence = (
        f"table {killswitch.FAMILY} {table} matches the state record "
        f"({len(actual)} lines, seal sha256:{digest}); policy drop on output/input/forward; "
        f"packets refused so far: {killswitch.refused(live)}"
    )
    netdev = [t for t in foreign if t.startswith(("netdev ", "bridge "))]
    if netdev:
        return verdict(
            name,
            False,
            evidence + f"; but foreign tables can redirect packets: {', '.join(netdev)}",
        )
    if foreign:
        evidence += f"; other tables (cannot undo its drops): {', '.join(foreign)}"
    return verdict(name, True, evidence)


def _foreign_tables(ns: str, ours: str) -> list[str]:
    """Other nft tables in NS, as "family name"."""
    out = run(["nft", "list", "tables"], ns=ns, check=False)
    tables = []
    for line in out.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table":
            if words[1] == killswitch.FAMILY and words[2] == ours:
                continue
            tables.append(f"{words[1]} {words[2]}")
    return tables
