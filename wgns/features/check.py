"""`wgns check NS`: a self-test that shows, with evidence, that NS has no way out but the tunnel.

Each check yields one :class:`Result` (PASS, FAIL or SKIP with the evidence). The expected state
comes from the state record (/run/wgns/NS.json), the actual state from the kernel:

* ``interfaces``: only lo, the recorded wg interface(s) (of the recorded kind) and declared
  forward veths exist, and the wg interfaces are up;
* ``routes``: every route of every table leaves through a wg interface (lo only for local,
  loopback and unreachable routes; a declared forward veth, whose traffic the kill switch's
  openings narrow, for the routes the forward made);
* ``killswitch``: the live nft table equals the one rendered from the state record, seal
  included (nft itself renders the expected table, in a throwaway network namespace);
* ``handshake``: every peer's latest handshake is younger than WireGuard's REJECT_AFTER_TIME
  (180 s), after a nudge through the tunnel when it was not;
* ``dns``: /etc/netns/NS/resolv.conf names exactly the servers wgns wrote, each routed through
  wg, and each answers a query sent from inside NS while the tunnel's byte counters move;
* ``ipv6``: a profile with IPv6 has it on wg and routed through wg; one without has it dropped
  (probe datagrams to a global and a link-local multicast address fail from inside NS);
* ``exit`` (with an echo URL): the address seen from inside differs from the one seen outside.

Checks only read, except the probe packets they send from inside NS.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wgns.engine import state
from wgns.errors import WgnsError
from wgns.features import killswitch
from wgns.system import netns
from wgns.wireguard import dump

REJECT_AFTER_TIME = 180  # seconds: WireGuard does not use a session older than this
DEFAULT_TIMEOUT = 5.0
ORDER = ("interfaces", "routes", "killswitch", "handshake", "dns", "ipv6", "exit")
_NOT_LEAVING = frozenset({"unreachable", "blackhole", "prohibit", "throw"})
_LO_TYPES = frozenset({"local", "broadcast", "multicast", "anycast"})
_EXPECTED_KIND = {"userspace": "tun", "kernel": "wireguard"}
_FETCH = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:\n"
    "    sys.stdout.write(r.read(200).decode(errors='replace'))\n"
)


@dataclass
class Result:
    name: str
    status: str  # "pass" | "fail" | "skip"
    evidence: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        return f"{self.status.upper()} {self.name}: {self.evidence}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "evidence": self.evidence}


def _result(name: str, ok: bool, evidence: str) -> Result:
    return Result(name, "pass" if ok else "fail", evidence)


# ---------------------------------------------------------------------------------- gathering


def _ip_json(ns: str, args: Sequence[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise WgnsError(f"`ip -n {ns} {' '.join(args)}` failed: {proc.stderr.strip()}")
    text = proc.stdout.strip()
    data: list[dict[str, Any]] = json.loads(text) if text else []
    return data


@dataclass
class Facts:
    """What the checks look at, read once."""

    ns: str
    rec: state.Record
    spec: killswitch.Spec | None
    links: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wg_ifnames(self) -> list[str]:
        return [str(i["ifname"]) for i in self.rec.interfaces]

    @property
    def veths(self) -> list[str]:
        """Interfaces declared by forwards (kill switch openings)."""
        return [o.ifname for o in self.spec.openings] if self.spec else []


def spec_of(rec: state.Record) -> killswitch.Spec | None:
    """The kill switch as recorded: ``extra.killswitch``, else from the journal and record."""
    raw = rec.extra.get("killswitch")
    if isinstance(raw, dict):
        return killswitch.Spec.from_json(raw)
    if not rec.kill_switch:
        return None
    table = rec.extra.get("nft_table")
    if not isinstance(table, str):
        return None
    return killswitch.Spec(
        table=table,
        wg_ifnames=tuple(str(i["ifname"]) for i in rec.interfaces),
        ipv6=rec.ipv6 == "tunnelled",
    )


def _journal_ruleset(rec: state.Record, table: str) -> str | None:
    """The last kill switch script wgns applied for TABLE, as journaled."""
    found = None
    for e in rec.journal:
        if e.get("kind") == "nft_table" and e.get("table") == table and e.get("ns") == rec.ns:
            found = str(e.get("ruleset", ""))
    return found


def _journal_files(rec: state.Record) -> dict[str, str] | None:
    found = None
    for e in rec.journal:
        if e.get("kind") == "netns_files" and e.get("ns") == rec.ns:
            found = dict(e.get("files", {}))
    return found


def gather(ns: str) -> Facts:
    netns.validate_name(ns)
    rec = state.load(ns)
    if rec is None:
        raise WgnsError(f"{ns} is not managed by wgns", hint="see `wgns status` for the list")
    facts = Facts(ns=ns, rec=rec, spec=spec_of(rec))
    if netns.exists(ns):
        facts.links = _ip_json(ns, ["-d", "address", "show"])
        facts.routes = [
            *_ip_json(ns, ["-4", "route", "show", "table", "all"]),
            *_ip_json(ns, ["-6", "route", "show", "table", "all"]),
        ]
    return facts


# ---------------------------------------------------------------------------------- the checks


def check_interfaces(f: Facts) -> Result:
    if not netns.exists(f.ns):
        return _result("interfaces", False, f"namespace {f.ns} does not exist")
    expected = ["lo", *f.wg_ifnames, *f.veths]
    present = {str(link["ifname"]): link for link in f.links}
    problems = []
    extra = sorted(set(present) - set(expected))
    if extra:
        kinds = [f"{n} ({_kind(present[n]) or 'unknown kind'})" for n in extra]
        problems.append("unexpected: " + ", ".join(kinds))
    missing = [n for n in ["lo", *f.wg_ifnames] if n not in present]
    if missing:
        problems.append("missing: " + ", ".join(missing))
    want_kind = _EXPECTED_KIND.get(f.rec.backend)
    for n in f.wg_ifnames:
        link = present.get(n)
        if link is None:
            continue
        kind = _kind(link)
        if want_kind and kind != want_kind:
            problems.append(f"{n} is a {kind or 'device of unknown kind'}, not {want_kind}")
        if "UP" not in link.get("flags", []):
            problems.append(f"{n} is down")
    if f.rec.phase != "up":
        problems.append(f"state record phase is {f.rec.phase!r}, not 'up'")
    shown = ", ".join(
        f"{n} ({_kind(present[n]) or 'loopback'})" if n != "lo" else "lo"
        for n in sorted(present, key=lambda n: (n != "lo", n))
    )
    if problems:
        return _result("interfaces", False, "; ".join(problems) + f" (present: {shown})")
    return _result("interfaces", True, f"{shown}; nothing else")


def _kind(link: dict[str, Any]) -> str | None:
    info = link.get("linkinfo") or {}
    kind = info.get("info_kind")
    return str(kind) if kind else None


def _route_text(r: dict[str, Any]) -> str:
    parts = [] if r.get("type", "unicast") == "unicast" else [str(r["type"])]
    parts.append(str(r.get("dst", "?")))
    if r.get("gateway"):
        parts.append(f"via {r['gateway']}")
    devs = _route_devs(r)
    if devs:
        parts.append("dev " + ",".join(devs))
    table = r.get("table")
    if table and table != "main":
        parts.append(f"table {table}")
    return " ".join(parts)


def _route_devs(r: dict[str, Any]) -> list[str]:
    devs = [str(r["dev"])] if r.get("dev") else []
    for nh in r.get("nexthops") or []:
        if isinstance(nh, dict) and nh.get("dev"):
            devs.append(str(nh["dev"]))
    return devs


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
    devs = _route_devs(r)
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
        return _result("routes", False, f"namespace {f.ns} does not exist")
    bad = []
    via_wg = []
    via_veth = []
    for r in f.routes:
        why = route_verdict(r, f.wg_ifnames, f.veths)
        if why is not None:
            bad.append(f"{_route_text(r)} ({why})")
        elif str(r.get("type", "unicast")) == "unicast":
            devs = _route_devs(r)
            if any(d in f.wg_ifnames for d in devs):
                via_wg.append(_route_text(r))
            elif any(d in f.veths for d in devs):
                via_veth.append(_route_text(r))
    if bad:
        return _result(
            "routes", False, f"{len(bad)} route(s) not through the tunnel: " + "; ".join(bad)
        )
    if not via_wg:
        return _result("routes", False, "no route through the tunnel at all")
    return _result(
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
        return _result(
            name, False, "the kill switch is disabled in the profile (kill_switch = false)"
        )
    if f.spec is None:
        return _result(name, False, "the state record does not say which table to expect")
    if not netns.exists(f.ns):
        return _result(name, False, f"namespace {f.ns} does not exist")
    table = f.spec.table
    # rendered from the recorded spec (kept current by `wgns forward`), else as journaled
    if "killswitch" in f.rec.extra:
        rendered = f.spec.render()
    else:
        rendered = _journal_ruleset(f.rec, table) or f.spec.render()
    live = killswitch.live(table, ns=f.ns)
    if live is None:
        return _result(name, False, f"table {killswitch.FAMILY} {table} is missing")
    expected = killswitch.normalize(killswitch.canonical(rendered, table))
    actual = killswitch.normalize(live)
    if expected != actual:
        d = killswitch.diff(expected, actual)
        shown = "; ".join(d[:6]) + (f"; ... ({len(d) - 6} more)" if len(d) > 6 else "")
        return _result(name, False, f"table {killswitch.FAMILY} {table} was changed: {shown}")
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
        return _result(
            name,
            False,
            evidence + f"; but foreign tables can redirect packets: {', '.join(netdev)}",
        )
    if foreign:
        evidence += f"; other tables (cannot undo its drops): {', '.join(foreign)}"
    return _result(name, True, evidence)


def _foreign_tables(ns: str, ours: str) -> list[str]:
    """Other nft tables in NS, as "family name"."""
    from wgns.engine.ops import run

    out = run(["nft", "list", "tables"], ns=ns, check=False)
    tables = []
    for line in out.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table":
            if words[1] == killswitch.FAMILY and words[2] == ours:
                continue
            tables.append(f"{words[1]} {words[2]}")
    return tables


# ------------------------------------------------------------------ probes from inside the ns


def _in_ns(ns: str, family: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket of NS: sockets belong to the namespace they are created in."""
    with netns.entered(ns):
        return socket.socket(family, kind)


def _route_get(ns: str, addr: str) -> str | None:
    try:
        data = _ip_json(ns, ["route", "get", addr])
    except WgnsError:
        return None
    return str(data[0].get("dev")) if data and data[0].get("dev") else None


def _tunnel_bytes(ns: str, ifnames: Sequence[str]) -> tuple[int, int]:
    tx = rx = 0
    for n in ifnames:
        dev = dump.show(n, ns=ns)
        if dev is None:
            continue
        for p in dev.peers:
            tx += p.tx_bytes
            rx += p.rx_bytes
    return tx, rx


def dns_query(qname: str = ".") -> tuple[int, bytes]:
    """(id, packet) of a recursive query for QNAME type NS class IN."""
    qid = secrets.randbelow(0x10000)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = [p for p in qname.strip(".").split(".") if p]
    name = b"".join(bytes([len(p)]) + p.encode() for p in labels) + b"\0"
    return qid, header + name + struct.pack("!HH", 2, 1)


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def ask_dns(ns: str, server: str, timeout: float) -> tuple[str | None, float]:
    """Query SERVER from inside NS: (rcode name or None when no answer / error text, seconds)."""
    addr = ipaddress.ip_address(server)
    fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    start = time.monotonic()
    try:
        s = _in_ns(ns, fam)
    except OSError as e:
        return f"error: {e.strerror}", 0.0
    with s:
        qid, packet = dns_query()
        deadline = start + timeout
        next_send = start
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None, now - start
            if now >= next_send:
                try:
                    s.sendto(packet, (server, 53))
                except OSError as e:
                    return f"error: {errno.errorcode.get(e.errno or 0, e.strerror)}", now - start
                next_send = now + 1.0
            s.settimeout(max(0.01, min(next_send, deadline) - now))
            try:
                data, _ = s.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError as e:
                return f"error: {errno.errorcode.get(e.errno or 0, e.strerror)}", now - start
            if len(data) >= 12:
                rid, flags = struct.unpack("!HH", data[:4])
                if rid == qid and flags & 0x8000:
                    return _RCODES.get(
                        flags & 0xF, f"rcode {flags & 0xF}"
                    ), time.monotonic() - start


def nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            out.append(words[1])
    return out


def check_dns(f: Facts, timeout: float) -> Result:
    name = "dns"
    path = f"{netns.etc_dir_of(f.ns)}/resolv.conf"
    written = _journal_files(f.rec)
    if written is None or "resolv.conf" not in written:
        return _result(name, False, f"wgns wrote no resolv.conf for {f.ns}")
    want = nameservers(written["resolv.conf"])
    try:
        with open(path) as fh:
            live_text = fh.read()
    except OSError as e:
        return _result(name, False, f"{path}: {e.strerror} (programs inside would use the host's)")
    have = nameservers(live_text)
    if have != want:
        return _result(
            name,
            False,
            f"{path} was edited: nameservers {', '.join(have) or 'none'}, "
            f"expected {', '.join(want) or 'none'}",
        )
    if not netns.exists(f.ns):
        return _result(name, False, f"namespace {f.ns} does not exist")
    if all(ipaddress.ip_address(a).is_loopback for a in have):
        return _result(
            name,
            False,
            f"the profile names no DNS server ({path}: {', '.join(have)}): lookups fail inside",
        )
    notes = []
    ok = True
    tx0, rx0 = _tunnel_bytes(f.ns, f.wg_ifnames)
    for server in have[:3]:
        dev = _route_get(f.ns, server)
        if dev not in f.wg_ifnames:
            ok = False
            notes.append(f"{server} is routed via {dev or 'nothing'}, not the tunnel")
            continue
        rcode, took = ask_dns(f.ns, server, timeout)
        if rcode is None:
            ok = False
            notes.append(f"{server} via {dev}: no answer in {timeout:g}s")
        elif rcode.startswith("error"):
            ok = False
            notes.append(f"{server} via {dev}: {rcode}")
        else:
            notes.append(f"{server} via {dev} answered {rcode} in {took * 1000:.0f} ms")
    tx1, rx1 = _tunnel_bytes(f.ns, f.wg_ifnames)
    moved = f"tunnel counters tx +{tx1 - tx0} B, rx +{rx1 - rx0} B"
    if ok and (tx1 <= tx0 or rx1 <= rx0):
        ok = False
        notes.append("but the tunnel's counters did not move")
    return _result(name, ok, f"resolv.conf: {', '.join(have)}; " + "; ".join(notes) + f"; {moved}")


def _poke_targets(f: Facts, allowed: Sequence[str]) -> list[str]:
    """Addresses inside a peer's AllowedIPs to send one datagram to, to start a handshake."""
    written = _journal_files(f.rec) or {}
    dns = nameservers(written.get("resolv.conf", ""))
    nets = []
    for a in allowed:
        try:
            nets.append(ipaddress.ip_network(a, strict=False))
        except ValueError:
            continue
    out = [d for d in dns if any(ipaddress.ip_address(d) in n for n in nets)]
    for n in nets:
        if n.prefixlen >= (8 if n.version == 4 else 16) and n.num_addresses > 2:
            out.append(str(n.network_address + 1))
    return out


def _poke(ns: str, target: str) -> None:
    fam = socket.AF_INET6 if ":" in target else socket.AF_INET
    try:
        s = _in_ns(ns, fam)
    except OSError:
        return
    with s, contextlib.suppress(OSError):
        s.sendto(b"wgns check", (target, 9))


def check_handshake(f: Facts, timeout: float) -> Result:
    name = "handshake"
    if not netns.exists(f.ns):
        return _result(name, False, f"namespace {f.ns} does not exist")
    deadline = time.monotonic() + timeout
    poked = False
    while True:
        now_wall = time.time()
        notes = []
        stale: list[tuple[str, list[str]]] = []
        missing = []
        for n in f.wg_ifnames:
            dev = dump.show(n, ns=f.ns)
            if dev is None:
                missing.append(n)
                continue
            if not dev.peers:
                missing.append(f"{n} (no peers)")
            for p in dev.peers:
                age = now_wall - p.latest_handshake
                who = f"{n} peer {p.public_key[:8]}… ({p.endpoint or 'no endpoint'})"
                if p.latest_handshake == 0 or age > REJECT_AFTER_TIME:
                    seen = "never" if p.latest_handshake == 0 else f"{age:.0f}s ago"
                    stale.append((f"{who}: last handshake {seen}", list(p.allowed_ips)))
                else:
                    notes.append(f"{who}: {max(age, 0):.0f}s ago")
        if missing:
            return _result(name, False, "no WireGuard device: " + ", ".join(missing))
        if not stale:
            return _result(name, True, "; ".join(notes) + f" (fresh: < {REJECT_AFTER_TIME}s)")
        if time.monotonic() >= deadline:
            return _result(
                name,
                False,
                "; ".join(s for s, _ in stale)
                + (f" (nothing within {timeout:g}s after sending through it)" if poked else "")
                + ("; " + "; ".join(notes) if notes else ""),
            )
        if not poked:
            for _, allowed in stale:
                for target in _poke_targets(f, allowed)[:1]:
                    _poke(f.ns, target)
            poked = True
        time.sleep(0.1)


_BLOCKED_ERRNOS = {
    errno.EPERM,
    errno.EACCES,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EADDRNOTAVAIL,
    errno.ENODEV,
    errno.EAFNOSUPPORT,
}


def _try_send6(ns: str, target: str, scope: str | None) -> str:
    """'sent' or the errno name of a UDP datagram to [TARGET]:9 from inside NS."""
    try:
        s = _in_ns(ns, socket.AF_INET6)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    with s:
        try:
            if scope is not None:
                with netns.entered(ns):
                    index = socket.if_nametoindex(scope)
                s.sendto(b"wgns check", (target, 9, 0, index))
            else:
                s.sendto(b"wgns check", (target, 9))
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, str(e))
    return "sent"


def check_ipv6(f: Facts) -> Result:
    name = "ipv6"
    if not netns.exists(f.ns):
        return _result(name, False, f"namespace {f.ns} does not exist")
    mode = f.rec.ipv6
    if mode == "tunnelled":
        v6_addrs = [
            f"{a['local']}/{a['prefixlen']}"
            for link in f.links
            if link.get("ifname") in f.wg_ifnames
            for a in link.get("addr_info", [])
            if a.get("family") == "inet6" and a.get("scope") == "global"
        ]
        v6_routes = [
            _route_text(r)
            for r in f.routes
            if ":" in str(r.get("dst", "")) + str(r.get("gateway", ""))
            and str(r.get("type", "unicast")) == "unicast"
            and any(d in f.wg_ifnames for d in _route_devs(r))
        ]
        if not v6_addrs:
            return _result(
                name, False, "the profile has IPv6 but no wg interface has an IPv6 address"
            )
        if not v6_routes:
            return _result(
                name, False, f"IPv6 address {', '.join(v6_addrs)} but no IPv6 route via wg"
            )
        return _result(
            name, True, f"tunnelled: {', '.join(v6_addrs)}; routes {', '.join(v6_routes[:4])}"
        )
    if mode == "blocked":
        probes = [("2001:db8::1", None)] + [("ff02::1", n) for n in f.wg_ifnames]
        outcomes = []
        ok = True
        for target, scope in probes:
            got = _try_send6(f.ns, target, scope)
            where = f"[{target}%{scope}]" if scope else f"[{target}]"
            outcomes.append(f"{where}:9 -> {got}")
            if got == "sent":
                ok = False
        if ok and not f.rec.kill_switch:
            ok = False
        verdict = "blocked" if ok else "NOT blocked"
        return _result(name, ok, f"{verdict} (profile has no IPv6): " + ", ".join(outcomes))
    return _result(
        name, False, "IPv6 is neither tunnelled nor blocked (no IPv6 in profile, kill switch off)"
    )


def _fetch(url: str, timeout: float, ns: str | None) -> tuple[str | None, str]:
    """(body, error) of GET URL from NS (via `ip netns exec`, so NS's resolv.conf is used)."""
    argv = [sys.executable, "-I", "-S", "-c", _FETCH, url, str(timeout)]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout + 5, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g}s"
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        return None, err[-1] if err else f"exit status {proc.returncode}"
    return proc.stdout.strip(), ""


def check_exit(f: Facts, url: str | None, timeout: float) -> Result:
    name = "exit"
    if url is None:
        return Result(name, "skip", "no --echo-url given")
    inside, err_in = _fetch(url, timeout, f.ns)
    outside, err_out = _fetch(url, timeout, f.rec.birthplace)
    if inside is None:
        return _result(name, False, f"{url} from inside: {err_in}")
    if outside is None:
        return _result(name, False, f"{url} seen inside as {inside}; without the tunnel: {err_out}")
    if inside == outside:
        return _result(name, False, f"{url} sees {inside} with and without the tunnel")
    return _result(name, True, f"{url} sees {inside} through the tunnel, {outside} without")


# ---------------------------------------------------------------------------------- driver


def run_checks(
    ns: str, *, echo_url: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[Result]:
    """Every check, in ORDER. DNS runs before the handshake check: its query starts one."""
    f = gather(ns)
    results: dict[str, Result] = {}
    steps: list[tuple[str, Callable[[], Result]]] = [
        ("interfaces", lambda: check_interfaces(f)),
        ("routes", lambda: check_routes(f)),
        ("killswitch", lambda: check_killswitch(f)),
        ("dns", lambda: check_dns(f, timeout)),
        ("handshake", lambda: check_handshake(f, timeout)),
        ("ipv6", lambda: check_ipv6(f)),
        ("exit", lambda: check_exit(f, echo_url, timeout)),
    ]
    for key, step in steps:
        try:
            results[key] = step()
        except (WgnsError, OSError, ValueError) as e:
            results[key] = _result(key, False, f"could not check: {e}")
    return [results[k] for k in ORDER]


def report(ns: str, results: Sequence[Result]) -> dict[str, Any]:
    return {
        "format": 1,
        "ns": ns,
        "ok": all(r.ok for r in results),
        "checks": [r.to_json() for r in results],
    }


def is_root() -> bool:
    return os.geteuid() == 0
