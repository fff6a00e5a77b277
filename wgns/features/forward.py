"""Port forwards: publish a service of a confined namespace on the host (issue 5).

Two modes, both driven by one journaled operation per namespace (:class:`Forwarding`):

``nat`` (default)
    A veth pair between the main namespace and NS (``names.veth_ifnames``), a /31 from the
    address pool, and one nft table of wgns in the main namespace (``names.nft_table(NS)``):
    DNAT of IPv4 traffic from the ``--from`` sources to NS, in ``prerouting`` for traffic that
    arrives from elsewhere and in ``output`` for connections made on the host itself
    (``127.0.0.1:PORT`` included: ``route_localnet`` on the host end of the veth and SNAT of
    loopback sources to the host end's address). Inside NS, a policy rule sends every packet
    whose *source* is the NS end of the veth (the replies of forwarded connections, nothing
    else) to a table whose default route is the veth; the kill switch gets narrow openings on
    the veth: new connections in only to the forwarded ports, out only the packets of
    connections that carry the wgns conntrack mark, and new connections to the host only to
    ``allow_host`` ports. Everything else in NS, including anything the service starts, still
    goes through the tunnel only.

    IPv6 has no ``route_localnet``: the kernel drops a packet for ``::1`` that arrives on any
    interface but ``lo`` (``Ip6InNoRoutes``), so a DNAT of ``[::1]:PORT`` can never see its
    replies. IPv6 sources of a nat forward are therefore served by the built-in relay, which
    listens on ``[::1]:PORT`` (or ``[::]:PORT`` for other IPv6 sources) automatically.

``relay``
    ``python -m wgns.features.relay``: one asyncio process per forward, in its own session,
    listening in the main namespace and connecting to the service on NS's loopback. No veth, no nft.

State: ``rec.extra["forwards"]`` lists the forwards (for ``wgns forward list``); the journal
holds one ``forwards`` entry whose ``result`` records everything that exists (veth, pool slot,
port claims, relays with pid and start time, sysctls), updated *before* each change. ``down``
undoes it from ``result`` alone, so it is exact after a crash at any step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgns import log
from wgns.engine import state
from wgns.engine.ops import (
    Context,
    Op,
    del_link,
    ip_batch,
    proc_starttime,
    process_alive,
    run,
    stop_process,
)
from wgns.errors import UsageError, WgnsError
from wgns.features import killswitch
from wgns.profile.frozen import replace
from wgns.profile.model import Forward, ForwardMode, IPNetwork, Proto
from wgns.system import names, netns

POOL_ENV = "WGNS_FORWARD_POOL"
# RFC 3927 link-local: never routed beyond a link, and each veth pair is a link of its own.
# 169.254.64.0/18 stays clear of the addresses clouds and Kubernetes use (169.254.0.x,
# 169.254.20.10, 169.254.169.x, 169.254.170.x). 8192 pairs of /31.
DEFAULT_POOL = "169.254.64.0/18"
CLAIMS_DIR = Path(state.STATE_DIR) / "claims"
ROUTE_TABLE = 30574  # inside NS only: the table of replies over the veth
RULE_PREF = 3000
CT_MARK = 0x776E0001  # inside NS only: connections allowed over the veth
LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.IPv6Network("::1/128")
RELAY_START_TIMEOUT = 10.0
_PKG_PARENT = str(Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------------------------
# Parsing (pure)


def parse_ports(text: str) -> tuple[int, int]:
    """``HOST_PORT[:NS_PORT]`` -> (host port, ns port)."""
    host, sep, inner = text.partition(":")
    try:
        hp = _port(host)
        np = _port(inner) if sep else hp
    except ValueError:
        raise UsageError(
            f"{text!r} is not HOST_PORT[:NS_PORT] with ports 1..65535",
            hint="e.g. 9091 or 8080:80",
        ) from None
    return hp, np


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5:
        raise ValueError(text)
    n = int(text)
    if not 1 <= n <= 65535:
        raise ValueError(text)
    return n


def parse_sources(items: Sequence[str]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for item in items:
        try:
            net = ipaddress.ip_network(item.strip(), strict=True)
        except ValueError:
            try:
                fixed = ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise UsageError(
                    f"--from {item!r} is not an IP network (ADDRESS/PREFIX or ADDRESS)"
                ) from None
            raise UsageError(
                f"--from {item!r} has host bits set", hint=f"did you mean {fixed}?"
            ) from None
        if net not in out:
            out.append(net)
    return tuple(out)


def make_forward(
    ports: str, *, proto: str = "tcp", sources: Sequence[str] = (), mode: str = "nat"
) -> Forward:
    hp, np = parse_ports(ports)
    fwd = Forward(host_port=hp, ns_port=np, proto=Proto(proto), mode=ForwardMode(mode))
    if sources:
        fwd = replace(fwd, sources=parse_sources(sources))
    return fwd


def to_json(f: Forward) -> dict[str, Any]:
    return {
        "host_port": f.host_port,
        "ns_port": f.ns_port,
        "proto": f.proto.value,
        "from": [str(s) for s in f.sources],
        "mode": f.mode.value,
    }


def from_json(d: dict[str, Any]) -> Forward:
    return Forward(
        host_port=int(d["host_port"]),
        ns_port=int(d["ns_port"]),
        proto=Proto(d["proto"]),
        sources=tuple(ipaddress.ip_network(s) for s in d["from"]),
        mode=ForwardMode(d["mode"]),
    )


def key_of(f: Forward) -> str:
    return f"{f.proto.value}/{f.host_port}"


# --------------------------------------------------------------------------------------------
# What a set of forwards needs (pure)


def _is_loopback(net: IPNetwork) -> bool:
    if isinstance(net, ipaddress.IPv4Network):
        return net.subnet_of(LOOPBACK_V4)
    return net == LOOPBACK_V6


def nat_sources(f: Forward) -> list[ipaddress.IPv4Network]:
    """The IPv4 sources a nat forward DNATs (empty for relay mode)."""
    if f.mode is not ForwardMode.NAT:
        return []
    nets = [s for s in f.sources if isinstance(s, ipaddress.IPv4Network)]
    return list(ipaddress.collapse_addresses(nets))


def relay_sources(f: Forward) -> list[IPNetwork]:
    """The sources the relay serves: all of them in relay mode, the IPv6 ones in nat mode."""
    if f.mode is ForwardMode.RELAY:
        return list(f.sources)
    return [s for s in f.sources if s.version == 6]


def relay_listen(sources: Sequence[IPNetwork]) -> list[str]:
    """Addresses the relay binds for SOURCES: loopback ones when only loopback may connect."""
    out: list[str] = []
    v4 = [s for s in sources if s.version == 4]
    v6 = [s for s in sources if s.version == 6]
    if v4:
        out.append("127.0.0.1" if all(_is_loopback(s) for s in v4) else "0.0.0.0")
    if v6:
        out.append("::1" if all(_is_loopback(s) for s in v6) else "::")
    return out


def needs_veth(forwards: Sequence[Forward], allow_host: Sequence[int]) -> bool:
    return bool(allow_host) or any(nat_sources(f) for f in forwards)


def _set(items: Sequence[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def openings(
    ns: str, forwards: Sequence[Forward], allow_host: Sequence[int]
) -> tuple[killswitch.Opening, ...]:
    """The kill switch openings on NS's end of the veth: only what the forwards need.

    In: new connections to the forwarded NS ports (marked), and packets of marked connections.
    Out: packets of marked connections (replies), and new connections to ``allow_host`` ports.
    Addresses are not needed: the veth carries nothing else, and NS's end has one address."""
    if not needs_veth(forwards, allow_host):
        return ()
    _, vn = names.veth_ifnames(ns)
    mark = f"0x{CT_MARK:08x}"
    rules_in = [f'iifname "{vn}" ct state established,related ct mark {mark} accept']
    rules_out = [f'oifname "{vn}" ct state established,related ct mark {mark} accept']
    for proto in Proto:
        ports = sorted({f.ns_port for f in forwards if f.proto is proto and nat_sources(f)})
        if ports:
            rules_in.append(
                f'iifname "{vn}" meta nfproto ipv4 ct state new {proto.value} dport '
                f"{_set(ports)} ct mark set {mark} accept"
            )
    if allow_host:
        ports = sorted(set(allow_host))
        rules_out.append(
            f'oifname "{vn}" meta nfproto ipv4 ct state new meta l4proto {{ tcp, udp }} '
            f"th dport {_set(ports)} ct mark set {mark} accept"
        )
    return (killswitch.Opening(ifname=vn, rules_in=tuple(rules_in), rules_out=tuple(rules_out)),)


def main_ruleset(
    ns: str,
    forwards: Sequence[Forward],
    allow_host: Sequence[int],
    host_addr: str,
    ns_addr: str,
    guarded: Sequence[str] = (),
) -> str:
    """The nft script that creates or atomically replaces wgns's table of NS in the main ns."""
    table = names.nft_table(ns)
    vh, _ = names.veth_ifnames(ns)
    pre: list[str] = []
    out: list[str] = []
    for f in forwards:
        nets = nat_sources(f)
        if not nets:
            continue
        p = f.proto.value
        target = f"dnat ip to {ns_addr}:{f.ns_port}"
        out.append(f"fib daddr type local ip saddr {_set(nets)} {p} dport {f.host_port} {target}")
        remote = [n for n in nets if not n.subnet_of(LOOPBACK_V4)]
        if remote:
            pre.append(
                f'iifname != "{vh}" fib daddr type local ip saddr {_set(remote)} '
                f"{p} dport {f.host_port} {target}"
            )
    post = [f'oifname "{vh}" ip saddr 127.0.0.0/8 snat ip to {host_addr}']
    inp = [f'iifname "{vh}" ct state established,related accept']
    if allow_host:
        inp.append(
            f'iifname "{vh}" ip daddr {host_addr} meta l4proto {{ tcp, udp }} '
            f"th dport {_set(sorted(set(allow_host)))} accept"
        )
    inp.append(f'iifname "{vh}" counter drop comment "only allow_host ports"')
    fwd = [
        f'oifname "{vh}" ct status dnat accept',
        f'iifname "{vh}" ct status dnat ct state established,related accept',
        f'oifname "{vh}" counter drop',
        f'iifname "{vh}" counter drop comment "the host routes nothing for NS"',
    ]
    if guarded:
        # forwarding on these was off and wgns turned it on: keep it for DNATed connections
        g = _set([f'"{i}"' for i in guarded])
        fwd.append(f"iifname {g} ct status dnat accept")
        fwd.append(f'iifname {g} counter drop comment "forwarding enabled by wgns for DNAT only"')

    def chain(name: str, kind: str, hook: str, prio: int, rules: list[str]) -> str:
        body = "".join(f"\t\t{r}\n" for r in rules)
        return (
            f"\tchain {name} {{\n\t\ttype {kind} hook {hook} priority {prio}; policy accept;\n"
            f"{body}\t}}\n"
        )

    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        + chain("prerouting", "nat", "prerouting", -100, pre)
        + chain("output", "nat", "output", -100, out)
        + chain("postrouting", "nat", "postrouting", 100, post)
        + chain("input", "filter", "input", 0, inp)
        + chain("forward", "filter", "forward", 0, fwd)
        + "}\n"
    )


# --------------------------------------------------------------------------------------------
# Claims: files under /run/wgns/claims, created with O_EXCL, so that checking or taking one is
# O(1) whatever the number of namespaces.


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


def release(kind: str, key: str, owner: str) -> None:
    p = _claim_path(kind, key)
    with contextlib.suppress(FileNotFoundError):
        if p.read_text() == owner:
            p.unlink()
    with contextlib.suppress(OSError):
        CLAIMS_DIR.rmdir()  # only when empty


# --------------------------------------------------------------------------------------------
# The address pool


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


def _route_free(answers: list[dict[str, Any] | None]) -> bool:
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


def _fibmatch(addrs: Sequence[str]) -> list[dict[str, Any] | None]:
    """`ip -j route get fibmatch` of each address, in one process; None where unreachable."""
    script = "".join(f"route get fibmatch {a}\n" for a in addrs)
    proc = subprocess.run(
        ["ip", "-j", "-force", "-b", "-"], input=script, capture_output=True, text=True
    )
    out: dict[str, dict[str, Any]] = {}
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
        for r in obj if isinstance(obj, list) else [obj]:
            if isinstance(r, dict) and "dst" in r:
                out.setdefault(str(r["dst"]), r)
    # answers come back in order, but failed lookups print nothing: match by address/prefix
    results: list[dict[str, Any] | None] = []
    for a in addrs:
        addr = ipaddress.IPv4Address(a)
        best: dict[str, Any] | None = None
        best_len = -1
        for dst, r in out.items():
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
        answers = _fibmatch(addrs)
        for i, s in enumerate(free):
            if not _route_free(answers[2 * i : 2 * i + 2]):
                continue
            host, inner = slot_addresses(net, s)
            if claim("pool", host, ns):
                return s, host, inner
    raise WgnsError(
        f"the forward address pool {net} is exhausted or collides with the host's networks",
        hint=f"set {POOL_ENV} to a free IPv4 network",
    )


# --------------------------------------------------------------------------------------------
# sysctls of the main namespace, shared by namespaces: the first to set one records the value
# to restore, the last to let go restores it.

SYSCTL_LOCK = Path(state.STATE_DIR) / "claims.lock"


@contextlib.contextmanager
def _sysctl_lock() -> Iterator[None]:
    os.makedirs(state.STATE_DIR, exist_ok=True)
    fd = os.open(SYSCTL_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            SYSCTL_LOCK.unlink()


def _sysctl_path(key: str) -> Path:
    """KEY in slash form (net/ipv4/conf/IF/forwarding): interface names may contain dots."""
    return Path("/proc/sys") / key


def sysctl_get(key: str) -> str:
    return _sysctl_path(key).read_text().strip()


def sysctl_set(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value + "\n")


def _holders_dir(key: str) -> Path:
    return CLAIMS_DIR / f"sysctl-{key.replace('/', '%')}.d"


def _orig_file(key: str) -> Path:
    return CLAIMS_DIR / f"sysctl-{key.replace('/', '%')}.orig"


def sysctl_hold(key: str, value: str, owner: str) -> str:
    """Set KEY to VALUE for OWNER; returns the value it had before anyone of wgns set it."""
    with _sysctl_lock():
        d = _holders_dir(key)
        orig_file = _orig_file(key)
        d.mkdir(parents=True, exist_ok=True)
        if not orig_file.exists():
            orig_file.write_text(sysctl_get(key))
        (d / owner).write_text(value)
        sysctl_set(key, value)
        return orig_file.read_text()


def sysctl_release(key: str, owner: str) -> None:
    with _sysctl_lock():
        d = _holders_dir(key)
        orig_file = _orig_file(key)
        with contextlib.suppress(FileNotFoundError):
            (d / owner).unlink()
        try:
            left = os.listdir(d)
        except FileNotFoundError:
            left = []
        if left:
            return
        with contextlib.suppress(FileNotFoundError):
            orig = orig_file.read_text()
            with contextlib.suppress(FileNotFoundError):  # the interface may be gone
                sysctl_set(key, orig)
            orig_file.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()
        with contextlib.suppress(OSError):
            CLAIMS_DIR.rmdir()


def _forwarding_key(dev: str) -> str:
    return f"net/ipv4/conf/{dev}/forwarding"


def ingress_interfaces(nets: Sequence[ipaddress.IPv4Network]) -> list[str]:
    """The interfaces packets from NETS arrive on (the routes back to them)."""
    found: list[str] = []
    for net in nets:
        probe = net.network_address if net.prefixlen == 32 else next(net.hosts(), None)
        if probe is None:
            continue
        proc = subprocess.run(
            ["ip", "-j", "-4", "route", "get", str(probe)], capture_output=True, text=True
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            continue
        for r in json.loads(proc.stdout):
            dev = r.get("dev")
            if dev and dev != "lo" and r.get("type", "unicast") == "unicast" and dev not in found:
                found.append(dev)
    return found


# --------------------------------------------------------------------------------------------
# The relay processes


def relay_argv(ns: str, f: Forward, sources: Sequence[IPNetwork]) -> list[str]:
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        "import sys; sys.path.insert(0, sys.argv[1]); from wgns.features.relay import main; "
        "sys.exit(main(sys.argv[2:]))",
        _PKG_PARENT,
        "--ns",
        ns,
        "--proto",
        f.proto.value,
        "--port",
        str(f.host_port),
        "--target-port",
        str(f.ns_port),
    ]
    for a in relay_listen(sources):
        argv += ["--listen", a]
    if any(not _is_loopback(s) for s in sources):
        for s in sources:
            argv += ["--from", str(s)]
    return argv


def start_relay(ns: str, f: Forward, sources: Sequence[IPNetwork], note: Any) -> None:
    """Start the relay of F in its own session; NOTE(pid, starttime) is called at once. Returns
    when it listens; raises with its message when it cannot."""
    r, w = os.pipe()
    try:
        argv = [*relay_argv(ns, f, sources), "--ready-fd", str(w)]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(w,),
        )
        note(proc.pid, proc_starttime(proc.pid))
        os.close(w)
        w = -1
        deadline = time.monotonic() + RELAY_START_TIMEOUT
        buf = b""
        os.set_blocking(r, False)
        while b"\n" not in buf:
            try:
                chunk = os.read(r, 4096)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WgnsError(f"the relay of {key_of(f)} did not start") from None
                time.sleep(0.002)
                continue
            if not chunk:
                break
            buf += chunk
        msg = buf.decode(errors="replace").strip()
        if msg != "ready":
            proc.wait(timeout=5)
            raise WgnsError(msg or f"the relay of {key_of(f)} exited with status {proc.returncode}")
        proc.returncode = 0  # it outlives us by design
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# --------------------------------------------------------------------------------------------
# The operation


def host_port_in_use(f: Forward) -> str | None:
    """The address where something of the host already holds F's port, if any: the forward
    would hide it (nat) or could not listen (relay)."""
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
                    return addr
    return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(kw_only=True)
class Forwarding(Op):
    """All forwards of one namespace. ``apply`` converges the system to ``forwards`` from what
    ``result`` says exists; ``undo`` removes everything ``result`` lists. Runtime changes
    replace this one journal entry (never append), so the journal stays exact."""

    kind = "forwards"
    ns: str
    forwards: list[dict[str, Any]] = field(default_factory=list)
    allow_host: list[int] = field(default_factory=list)
    # the kill switch spec (killswitch.Spec.to_json()), None without a kill switch:
    # re-rendered with the openings of the forwards, and kept in the state record for
    # `wgns check`
    killswitch: dict[str, Any] | None = None
    # the context of the apply/undo running now, for the checkpoints of its helpers
    _ctx: Context | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"journal": False}
    )

    def describe(self) -> str:
        fw = ", ".join(
            f"{d['proto']} {d['host_port']}->{d['ns_port']} ({d['mode']})" for d in self.forwards
        )
        extra = f"; allow_host {self.allow_host}" if self.allow_host else ""
        return f"forwards of {self.ns}: {fw or 'none'}{extra}"

    # -- helpers -------------------------------------------------------------------------

    def _save(self) -> None:
        if self._ctx is not None:
            self._ctx.checkpoint()

    def _fwds(self) -> list[Forward]:
        return [from_json(d) for d in self.forwards]

    def apply(self, ctx: Context) -> None:
        self._ctx = ctx
        fwds = self._fwds()
        r = self.result
        ns = self.ns
        # 1. port claims (host port + proto, across all namespaces)
        ports: list[str] = r.setdefault("ports", [])
        for f in fwds:
            k = key_of(f)
            if k in ports:
                continue
            owner = claim_owner("port", k)
            if owner is not None and owner != ns:
                raise WgnsError(
                    f"{f.proto.value} port {f.host_port} is already published by {owner}"
                )
            busy = host_port_in_use(f)
            if busy is not None:
                raise WgnsError(
                    f"{f.proto.value} port {f.host_port} is in use on the host ({busy})",
                    hint="pick another HOST_PORT",
                )
            ports.append(k)
            self._save()
            if not claim("port", k, ns):
                ports.remove(k)
                self._save()
                raise WgnsError(f"{f.proto.value} port {f.host_port} is already published")
        want_veth = needs_veth(fwds, self.allow_host)
        # 2. the veth, when some forward needs it
        if want_veth and "veth" not in r:
            slot, host, inner = allocate(ns)
            r["slot"] = {"pool": str(pool()), "index": slot, "host": host, "ns": inner}
            r["veth"] = names.veth_ifnames(ns)[0]
            self._save()
            self._create_veth(host, inner)
        # 3. forwarding on the interfaces remote sources arrive on
        remote = [n for f in fwds for n in nat_sources(f) if not n.subnet_of(LOOPBACK_V4)]
        want_ingress = ingress_interfaces(remote) if want_veth else []
        held: dict[str, str] = r.setdefault("sysctls", {})
        for dev in want_ingress:
            k = _forwarding_key(dev)
            if k not in held:
                held[k] = ""
                self._save()
                held[k] = sysctl_hold(k, "1", ns)
                self._save()
        # 4. the kill switch openings inside NS, then the main namespace's table
        self._render_killswitch(fwds)
        if want_veth:
            guarded = [k.split("/")[3] for k, orig in held.items() if orig.strip() == "0"]
            host, inner = r["slot"]["host"], r["slot"]["ns"]
            rules = main_ruleset(ns, fwds, self.allow_host, host, inner, guarded)
            if r.get("table_digest") != _digest(rules):
                r["table"] = names.nft_table(ns)
                r["table_digest"] = ""
                self._save()
                run(["nft", "-f", "-"], input=rules)
                r["table_digest"] = _digest(rules)
                self._save()
        # 5. relays
        relays: dict[str, dict[str, Any]] = r.setdefault("relays", {})
        wanted = {key_of(f): f for f in fwds if relay_sources(f)}
        for k, info in list(relays.items()):
            alive = process_alive(int(info.get("pid", 0)), info.get("starttime"))
            if k not in wanted or info.get("spec") != to_json(wanted[k]) or not alive:
                stop_process(int(info.get("pid", 0)), info.get("starttime"))
                del relays[k]
                self._save()
        for k, f in wanted.items():
            if k in relays:
                continue
            entry: dict[str, Any] = {"spec": to_json(f), "pid": 0, "starttime": None}
            relays[k] = entry

            def note(pid: int, starttime: int | None, entry: dict[str, Any] = entry) -> None:
                entry["pid"], entry["starttime"] = pid, starttime
                self._save()

            start_relay(ns, f, relay_sources(f), note)
        # 6. what is no longer wanted
        for k in list(held):
            if k.split("/")[3] not in want_ingress:
                sysctl_release(k, ns)
                del held[k]
                self._save()
        for k in list(ports):
            if k not in {key_of(f) for f in fwds}:
                release("port", k, ns)
                ports.remove(k)
                self._save()
        if not want_veth and "veth" in r:
            self._remove_veth()

    def _create_veth(self, host: str, inner: str) -> None:
        ns = self.ns
        vh, vn = names.veth_ifnames(ns)
        ip_batch([f"link add {vh} type veth peer name {vn} netns {ns}"])
        for key, value in (
            (f"net/ipv6/conf/{vh}/disable_ipv6", "1"),
            (f"net/ipv4/conf/{vh}/route_localnet", "1"),  # 127.x sources may leave over it
            (_forwarding_key(vh), "1"),  # replies to remote sources
        ):
            sysctl_set(key, value)
        with netns.entered(ns):
            sysctl_set(f"net/ipv6/conf/{vn}/disable_ipv6", "1")
        ip_batch([f"address add {host}/31 dev {vh}", f"link set {vh} up"])
        ip_batch(
            [
                f"address add {inner}/31 dev {vn}",
                f"link set {vn} up",
                f"route replace default via {host} dev {vn} table {ROUTE_TABLE}",
                f"rule add pref {RULE_PREF} from {inner} lookup {ROUTE_TABLE}",
            ],
            ns=ns,
        )

    def _remove_veth(self, doomed: bool = False) -> None:
        r = self.result
        ns = self.ns
        vh, vn = names.veth_ifnames(ns)
        if r.get("table"):
            proc = run(["nft", "delete", "table", "inet", r["table"]], check=False)
            if proc.returncode != 0 and "No such file" not in proc.stderr:
                raise WgnsError(f"cannot delete nft table {r['table']}: {proc.stderr.strip()}")
            r.pop("table")
            r.pop("table_digest", None)
            self._save()
        del_link(vh, ns=None)
        slot = r.get("slot")
        if slot and not doomed and netns.exists(ns):  # a doomed NS takes them with it
            del_link(vn, ns=ns)
            subprocess.run(
                ["ip", "-n", ns, "rule", "del", "pref", str(RULE_PREF), "from", slot["ns"],
                 "lookup", str(ROUTE_TABLE)],
                capture_output=True,
            )  # fmt: skip
        if slot:
            release("pool", slot["host"], ns)
        r.pop("veth", None)
        r.pop("slot", None)
        self._save()

    def _render_killswitch(self, fwds: Sequence[Forward]) -> None:
        if self.killswitch is None or not netns.exists(self.ns):
            return
        spec = replace(
            killswitch.Spec.from_json(self.killswitch),
            openings=openings(self.ns, fwds, self.allow_host),
        )
        rules = spec.render()
        if self.result.get("killswitch_digest") == _digest(rules):
            return  # unchanged: not even a new table handle
        self.killswitch = spec.to_json()
        self.result["killswitch_digest"] = ""
        self._save()
        run(["nft", "-f", "-"], input=rules, ns=self.ns)
        self.result["killswitch_digest"] = _digest(rules)
        self._save()

    def undo(self, ctx: Context) -> None:
        self._ctx = ctx
        r = self.result
        errors: list[str] = []
        for k, info in list(r.get("relays", {}).items()):
            stop_process(int(info.get("pid", 0)), info.get("starttime"))
            del r["relays"][k]
        try:
            self._remove_veth(doomed=self.ns in ctx.doomed)
        except WgnsError as e:
            errors.append(str(e))
        for k in list(r.get("sysctls", {})):
            try:
                sysctl_release(k, self.ns)
            except OSError as e:
                errors.append(f"cannot restore {k}: {e}")
            del r["sysctls"][k]
        for k in list(r.get("ports", [])):
            release("port", k, self.ns)
            r["ports"].remove(k)
        if errors:
            raise WgnsError("; ".join(errors))


# --------------------------------------------------------------------------------------------
# Planning (for `up`) and runtime changes (for `wgns forward`)


def plan_op(
    ns: str,
    forwards: Sequence[Forward],
    allow_host: Sequence[int],
    spec: killswitch.Spec | None,
) -> Forwarding | None:
    """The operation of `wgns up` for the profile's forwards (None when it has none)."""
    if not forwards and not allow_host:
        return None
    return Forwarding(
        ns=ns,
        forwards=[to_json(f) for f in forwards],
        allow_host=list(allow_host),
        killswitch=spec.to_json() if spec is not None else None,
    )


def _find(rec: state.Record) -> tuple[int, Forwarding] | None:
    for i, entry in enumerate(rec.journal):
        if entry.get("kind") == Forwarding.kind:
            op = Op.from_json(dict(entry))
            assert isinstance(op, Forwarding)
            return i, op
    return None


def _bind(rec: state.Record, index: int, op: Forwarding) -> Context:
    def checkpoint() -> None:
        rec.journal[index] = op.to_json()
        rec.extra["forwards"] = list(op.forwards)
        if op.killswitch is not None:
            rec.extra["killswitch"] = op.killswitch
        state.save(rec)

    return Context(ns=rec.ns, on_checkpoint=checkpoint)


def _require_up(ns: str) -> state.Record:
    rec = state.load(ns)
    if rec is None or rec.phase != "up":
        raise WgnsError(f"{ns} is not up", hint=f"wgns up PROFILE --name {ns}")
    if not netns.exists(ns):
        raise WgnsError(f"namespace {ns} is missing", hint=f"wgns down {ns}")
    return rec


def _change(ns: str, mutate: Any) -> Forwarding:
    """Apply MUTATE(list of forward dicts) -> new list to NS's forwards; on failure converge
    back to the old list, so that a refused change changes nothing."""
    rec = _require_up(ns)
    found = _find(rec)
    if found is None:
        op = Forwarding(
            ns=ns,
            killswitch=rec.extra.get("killswitch") if rec.kill_switch else None,
        )
        rec.journal.append(op.to_json())
        index = len(rec.journal) - 1
    else:
        index, op = found
    old = list(op.forwards)
    op.forwards = mutate(list(old))
    ctx = _bind(rec, index, op)
    ctx.checkpoint()
    log.debug("[#] %s", op.describe())
    try:
        op.apply(ctx)
    except BaseException:
        op.forwards = old
        try:
            op.apply(ctx)
        except Exception as e:  # pragma: no cover - reported, the journal still covers it
            log.warning("wgns: %s: could not restore the previous forwards: %s", ns, e)
        ctx.checkpoint()
        raise
    ctx.checkpoint()
    return op


def add(ns: str, fwd: Forward) -> Forwarding:
    netns.validate_name(ns)
    _require_up(ns)  # before the lock: a namespace that is not up gets no lock file
    with state.locked(ns):

        def mutate(cur: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for d in cur:
                if d["host_port"] == fwd.host_port and d["proto"] == fwd.proto.value:
                    raise WgnsError(
                        f"{fwd.proto.value} port {fwd.host_port} is already published by {ns}",
                        hint=f"wgns forward remove {ns} {fwd.host_port} first",
                    )
            return [*cur, to_json(fwd)]

        return _change(ns, mutate)


def remove(ns: str, host_port: int, proto: Proto) -> Forwarding:
    netns.validate_name(ns)
    _require_up(ns)  # before the lock: a namespace that is not up gets no lock file
    with state.locked(ns):

        def mutate(cur: list[dict[str, Any]]) -> list[dict[str, Any]]:
            left = [d for d in cur if (d["host_port"], d["proto"]) != (host_port, proto.value)]
            if len(left) == len(cur):
                raise WgnsError(f"{ns} publishes no {proto.value} port {host_port}")
            return left

        return _change(ns, mutate)


def listing(ns: str | None) -> list[dict[str, Any]]:
    """Every forward of NS (or of every managed namespace), with where it is served."""
    spaces = [ns] if ns is not None else state.managed()
    out: list[dict[str, Any]] = []
    for name in spaces:
        rec = state.load(name)
        if rec is None:
            if ns is not None:
                raise WgnsError(f"{name} is not managed by wgns")
            continue
        found = _find(rec)
        if found is None:
            continue
        _, op = found
        slot = op.result.get("slot") or {}
        relays = op.result.get("relays", {})
        for d in op.forwards:
            f = from_json(d)
            relay = relays.get(key_of(f))
            alive = None
            if relay is not None:
                alive = process_alive(int(relay.get("pid", 0)), relay.get("starttime"))
            out.append(
                {
                    "ns": name,
                    **d,
                    "nat_target": f"{slot['ns']}:{f.ns_port}" if slot and nat_sources(f) else None,
                    "veth": {"host": slot["host"], "ns": slot["ns"]} if slot else None,
                    "relay": {"pid": relay.get("pid"), "alive": alive} if relay else None,
                }
            )
    return out
