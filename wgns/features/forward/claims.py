"""Claims of host resources across namespaces (ports, address pool slots) and the address pool.

A claim is a file under /run/wgns/claims, created with O_EXCL and holding its owner's name, so
that checking or taking one is O(1) whatever the number of namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wgns.errors import WgnsError
from wgns.profile.model import Forward, Proto
from wgns.system import sysctl, tools

CLAIMS_DIR = sysctl.HOLDS_DIR
POOL_ENV = "WGNS_FORWARD_POOL"
# RFC 3927 link-local: never routed beyond a link, and each veth pair is a link of its own.
# 169.254.64.0/18 stays clear of the addresses clouds and Kubernetes use (169.254.0.x,
# 169.254.20.10, 169.254.169.x, 169.254.170.x). 8192 pairs of /31.
DEFAULT_POOL = "169.254.64.0/18"


def _claim_path(kind: str, key: str) -> Path:
    return CLAIMS_DIR / f"{kind}-{key.replace('/', '_').replace(':', '_')}"


def claim(kind: str, key: str, owner: str) -> bool:
    """Take claim KIND/KEY for OWNER. True if taken (or already OWNER's), False if someone's."""
    p = _claim_path(kind, key)
    for _ in range(3):
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return claim_owner(kind, key) == owner
        except FileNotFoundError:
            continue  # the directory was removed by a concurrent release
        try:
            os.write(fd, owner.encode())
        finally:
            os.close(fd)
        return True
    raise WgnsError(f"cannot create {p}")


def claim_owner(kind: str, key: str) -> str | None:
    try:
        return _claim_path(kind, key).read_text()
    except FileNotFoundError:
        return None


def take_over(kind: str, key: str, stale_owner: str, owner: str) -> bool:
    """Replace STALE_OWNER's claim KIND/KEY by OWNER's (atomically: a rename over it). False
    when the claim changed hands meanwhile."""
    p = _claim_path(kind, key)
    if claim_owner(kind, key) != stale_owner:
        return claim(kind, key, owner)
    tmp = p.with_name(f".{p.name}.{os.getpid()}")
    tmp.write_text(owner)
    os.replace(tmp, p)
    return True


def release(kind: str, key: str, owner: str) -> None:
    p = _claim_path(kind, key)
    with contextlib.suppress(FileNotFoundError):
        if p.read_text() == owner:
            p.unlink()
    with contextlib.suppress(OSError):
        CLAIMS_DIR.rmdir()  # only when empty


# --------------------------------------------------------------------------------------------
# Is a port of the host in use?


def _proc_net_holders(proto: Proto, port: int) -> list[str]:
    """The local addresses of sockets of the host bound to PORT, from /proc/net/*."""
    found: list[str] = []
    for name, v6 in ((proto.value, False), (proto.value + "6", True)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            addr_hex, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port:
                continue
            if proto is Proto.TCP and fields[3] != "0A":  # LISTEN: the others do not block
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc/net prints each 32-bit word in host (little endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            text = str(ipaddress.ip_address(packed))
            shown = f"[{text}]:{port}" if v6 else f"{text}:{port}"
            if shown not in found:
                found.append(shown)
    return found


def host_port_in_use(f: Forward) -> str | None:
    """Where something of the host already holds F's port, if anywhere (e.g. ``127.0.0.1:9095``):
    the forward would hide it (nat) or could not listen (relay)."""
    kind = socket.SOCK_STREAM if f.proto is Proto.TCP else socket.SOCK_DGRAM
    wanted = [("0.0.0.0", socket.AF_INET)] if any(s.version == 4 for s in f.sources) else []
    if any(s.version == 6 for s in f.sources):
        wanted.append(("::", socket.AF_INET6))
    for addr, family in wanted:
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((addr, f.host_port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    holders = _proc_net_holders(f.proto, f.host_port)
                    want_v6 = family == socket.AF_INET6
                    mine = [h for h in holders if h.startswith("[") == want_v6]
                    return ", ".join(mine or holders) or f"{addr}:{f.host_port}"
    return None


# --------------------------------------------------------------------------------------------
# The address pool of the veths


def pool() -> ipaddress.IPv4Network:
    text = os.environ.get(POOL_ENV, DEFAULT_POOL)
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise WgnsError(f"{POOL_ENV}={text!r} is not an IPv4 network") from None
    if net.prefixlen > 31:
        raise WgnsError(f"{POOL_ENV}={text!r} is too small (at least a /31)")
    return net


def slot_addresses(net: ipaddress.IPv4Network, slot: int) -> tuple[str, str]:
    """(host end, NS end) of SLOT: the /31 number SLOT of NET."""
    base = int(net.network_address) + 2 * slot
    return str(ipaddress.IPv4Address(base)), str(ipaddress.IPv4Address(base + 1))


def route_free(answers: Sequence[dict[str, Any] | None]) -> bool:
    """True when no route more specific than a default (or the whole link-local /16) and no
    local address covers the address (from `ip route get fibmatch`)."""
    for a in answers:
        if a is None:
            continue  # unreachable: nobody uses it
        if a.get("type", "unicast") != "unicast":
            return False  # local, broadcast, blackhole...
        dst = a.get("dst", "")
        if dst in ("default", "0.0.0.0/0") or dst == "169.254.0.0/16":
            continue
        return False
    return True


def ip_json_batch(lines: Sequence[str], options: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The JSON answers of many `ip` commands run in one process (`ip -j -force -b -`); a
    command that fails prints nothing."""
    script = "".join(line + "\n" for line in lines)
    proc = tools.run(["ip", "-j", *options, "-force", "-b", "-"], input=script, check=False)
    out: list[dict[str, Any]] = []
    dec = json.JSONDecoder()
    text = proc.stdout
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            break
        out.extend(r for r in (obj if isinstance(obj, list) else [obj]) if isinstance(r, dict))
    return out


def fibmatch(addrs: Sequence[str]) -> list[dict[str, Any] | None]:
    """`ip -j route get fibmatch` of each address, in one process; None where unreachable."""
    found: dict[str, dict[str, Any]] = {}
    for r in ip_json_batch([f"route get fibmatch {a}" for a in addrs]):
        if "dst" in r:
            found.setdefault(str(r["dst"]), r)
    # failed lookups print nothing: match each address with the most specific answer
    results: list[dict[str, Any] | None] = []
    for a in addrs:
        addr = ipaddress.IPv4Address(a)
        best: dict[str, Any] | None = None
        best_len = -1
        for dst, r in found.items():
            net = ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else dst, strict=False)
            if addr in net and net.prefixlen > best_len:
                best, best_len = r, net.prefixlen
        results.append(best)
    return results


def allocate(ns: str) -> tuple[int, str, str]:
    """A free /31 of the pool for NS: (slot, host end, NS end).

    The first slot tried is derived from NS's name; on a collision (another namespace's claim,
    or a host route or address) the next ones are probed. Taking a slot is one O_EXCL file, so
    allocation costs the same with 1 or 1000 namespaces."""
    net = pool()
    slots = max(1, net.num_addresses // 2)
    start = int.from_bytes(hashlib.blake2b(ns.encode(), digest_size=4).digest(), "big") % slots
    batch = 8
    tried = 0
    while tried < slots:
        candidates = [(start + tried + k) % slots for k in range(min(batch, slots - tried))]
        tried += len(candidates)
        free = [s for s in candidates if claim_owner("pool", slot_addresses(net, s)[0]) is None]
        if not free:
            continue
        addrs = [a for s in free for a in slot_addresses(net, s)]
        answers = fibmatch(addrs)
        for i, s in enumerate(free):
            if not route_free(answers[2 * i : 2 * i + 2]):
                continue
            host, inner = slot_addresses(net, s)
            if claim("pool", host, ns):
                return s, host, inner
    raise WgnsError(
        f"the forward address pool {net} is exhausted or collides with the host's networks",
        hint=f"set {POOL_ENV} to a free IPv4 network",
    )
