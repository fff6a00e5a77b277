"""The checks that send probes from inside the namespace: DNS, handshake, IPv6 and exit address.

Sockets belong to the network namespace they are created in: each probe creates its socket inside
NS and sends from there, so what it sees is what a program inside would see.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence

from wgns.errors import WgnsError
from wgns.features.check.facts import Facts, ip_json, journal_files, route_devs, route_text
from wgns.features.check.result import Result, verdict
from wgns.system import netns

REJECT_AFTER_TIME = 180  # seconds: WireGuard does not use a session older than this
_FETCH = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:\n"
    "    sys.stdout.write(r.read(200).decode(errors='replace'))\n"
)


def _in_ns(ns: str, family: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket of NS: sockets belong to the namespace they are created in."""
    with netns.entered(ns):
        return socket.socket(family, kind)


def route_get(ns: str, addr: str) -> str | None:
    try:
        data = ip_json(ns, ["route", "get", addr])
    except WgnsError:
        return None
    return str(data[0].get("dev")) if data and data[0].get("dev") else None


def tunnel_bytes(f: Facts) -> tuple[int, int]:
    tx = rx = 0
    for n in f.wg_ifnames:
        dev = f.read_device(n)
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
    written = journal_files(f.rec)
    if written is None or "resolv.conf" not in written:
        return verdict(name, False, f"wgns wrote no resolv.conf for {f.ns}")
    want = nameservers(written["resolv.conf"])
    try:
        with open(path) as fh:
            live_text = fh.read()
    except OSError as e:
        return verdict(name, False, f"{path}: {e.strerror} (programs inside would use the host's)")
    have = nameservers(live_text)
    if have != want:
        return verdict(
            name,
            False,
            f"{path} was edited: nameservers {', '.join(have) or 'none'}, "
            f"expected {', '.join(want) or 'none'}",
        )
    if not netns.exists(f.ns):
        return verdict(name, False, f"namespace {f.ns} does not exist")
    if all(ipaddress.ip_address(a).is_loopback for a in have):
        return verdict(
            name,
            False,
            f"the profile names no DNS server ({path}: {', '.join(have)}): lookups fail inside",
        )
    notes = []
    ok = True
    tx0, rx0 = tunnel_bytes(f)
    for server in have[:3]:
        dev = route_get(f.ns, server)
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
    tx1, rx1 = tunnel_bytes(f)
    moved = f"tunnel counters tx +{tx1 - tx0} B, rx +{rx1 - rx0} B"
    if ok and (tx1 <= tx0 or rx1 <= rx0):
        ok = False
        notes.append("but the tunnel's counters did not move")
    return verdict(name, ok, f"resolv.conf: {', '.join(have)}; " + "; ".join(notes) + f"; {moved}")


def _poke_targets(f: Facts, allowed: Sequence[str]) -> list[str]:
    """Addresses inside a peer's AllowedIPs to send one datagram to, to start a handshake."""
    written = journal_files(f.rec) or {}
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
        return verdict(name, False, f"namespace {f.ns} does not exist")
    deadline = time.monotonic() + timeout
    poked = False
    while True:
        now_wall = time.time()
        notes = []
        stale: list[tuple[str, list[str]]] = []
        missing = []
        for n in f.wg_ifnames:
            dev = f.read_device(n)
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
            return verdict(name, False, "no WireGuard device: " + ", ".join(missing))
        if not stale:
            return verdict(name, True, "; ".join(notes) + f" (fresh: < {REJECT_AFTER_TIME}s)")
        if time.monotonic() >= deadline:
            return verdict(
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
        return verdict(name, False, f"namespace {f.ns} does not exist")
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
            route_text(r)
            for r in f.routes
            if ":" in str(r.get("dst", "")) + str(r.get("gateway", ""))
            and str(r.get("type", "unicast")) == "unicast"
            and any(d in f.wg_ifnames for d in route_devs(r))
        ]
        if not v6_addrs:
            return verdict(
                name, False, "the profile has IPv6 but no wg interface has an IPv6 address"
            )
        if not v6_routes:
            return verdict(
                name, False, f"IPv6 address {', '.join(v6_addrs)} but no IPv6 route via wg"
            )
        return verdict(
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
        seen = "blocked" if ok else "NOT blocked"
        return verdict(name, ok, f"{seen} (profile has no IPv6): " + ", ".join(outcomes))
    return verdict(
        name, False, "IPv6 is neither tunnelled nor blocked (no IPv6 in profile, kill switch off)"
    )


def fetch_in(url: str, timeout: float, ns: str | None) -> tuple[str | None, str]:
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
    inside, err_in = fetch_in(url, timeout, f.ns)
    outside, err_out = fetch_in(url, timeout, f.rec.birthplace)
    return exit_verdict(url, inside, err_in, outside, err_out)


def exit_verdict(
    url: str, inside: str | None, err_in: str, outside: str | None, err_out: str
) -> Result:
    """The exit check's verdict from what URL showed inside and outside (body, or None + why)."""
    name = "exit"
    if inside is None:
        return verdict(name, False, f"{url} from inside: {err_in}")
    if outside is None:
        return verdict(name, False, f"{url} seen inside as {inside}; without the tunnel: {err_out}")
    if inside == outside:
        return verdict(name, False, f"{url} sees {inside} with and without the tunnel")
    return verdict(name, True, f"{url} sees {inside} through the tunnel, {outside} without")
