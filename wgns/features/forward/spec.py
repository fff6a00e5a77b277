"""What a forward is and what it needs: parsing, JSON, kill switch openings, nft rulesets. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from wgns.errors import UsageError
from wgns.features import killswitch
from wgns.profile.model import Forward, ForwardMode, IPNetwork, Proto
from wgns.system import names

ROUTE_TABLE = 30574  # inside NS only: the table of replies over the veth
RULE_PREF = 3000
CT_MARK = 0x776E0001  # inside NS only: connections allowed over the veth
LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.IPv6Network("::1/128")


# --------------------------------------------------------------------------------------------
# Parsing


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
    if not sources:
        return Forward(host_port=hp, ns_port=np, proto=Proto(proto), mode=ForwardMode(mode))
    return Forward(
        host_port=hp,
        ns_port=np,
        proto=Proto(proto),
        mode=ForwardMode(mode),
        sources=parse_sources(sources),
    )


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
    """What identifies a forward on the host: protocol and host port (``tcp/9091``)."""
    return f"{f.proto.value}/{f.host_port}"


# --------------------------------------------------------------------------------------------
# What a forward needs


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


def remote_sources(f: Forward) -> list[ipaddress.IPv4Network]:
    """The nat sources that arrive over an interface of the host (not loopback)."""
    return [n for n in nat_sources(f) if not n.subnet_of(LOOPBACK_V4)]


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


def relay_filters(sources: Sequence[IPNetwork]) -> list[IPNetwork]:
    """The ``--from`` filter of a relay: none when it listens on loopback only."""
    return list(sources) if any(not _is_loopback(s) for s in sources) else []


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


# --------------------------------------------------------------------------------------------
# The nft tables of the main namespace. One per resource, so that each op owns its table
# whole: the veth's filter (shared by the namespace's forwards, removed with the veth), one
# DNAT table per forward, one guard per interface wgns switched forwarding on for. Drops are
# final across tables and accepts are not, so a guard in a table of its own still holds.


def _chain(name: str, kind: str, hook: str, prio: int, rules: Sequence[str]) -> str:
    body = "".join(f"\t\t{r}\n" for r in rules)
    return (
        f"\tchain {name} {{\n\t\ttype {kind} hook {hook} priority {prio}; policy accept;\n"
        f"{body}\t}}\n"
    )


def _table(name: str, chains: str) -> str:
    """Create or atomically replace table NAME (one nft transaction)."""
    return f"table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{chains}}}\n"


def veth_table_name(ns: str) -> str:
    return names.nft_table(ns)


def dnat_table_name(ns: str, f: Forward) -> str:
    return f"{names.nft_table(ns)}_{f.proto.value}{f.host_port}"


def guard_table_name(ns: str, dev: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in dev)
    return f"{names.nft_table(ns)}_in_{safe}"


def veth_ruleset(ns: str, allow_host: Sequence[int], host_addr: str) -> str:
    """What may cross the host's end of NS's veth: DNATed connections and their replies,
    loopback sources rewritten to the host end, and new connections of NS to ALLOW_HOST ports
    of the host end; nothing is routed for NS."""
    vh, _ = names.veth_ifnames(ns)
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
    return _table(
        veth_table_name(ns),
        _chain("postrouting", "nat", "postrouting", 100, post)
        + _chain("input", "filter", "input", 0, inp)
        + _chain("forward", "filter", "forward", 0, fwd),
    )


def dnat_ruleset(ns: str, f: Forward, ns_addr: str) -> str:
    """F's DNAT to NS's end of the veth: in ``output`` for connections of the host itself
    (127.0.0.1 included), in ``prerouting`` for remote sources (never from the veth)."""
    vh, _ = names.veth_ifnames(ns)
    nets = nat_sources(f)
    p = f.proto.value
    target = f"dnat ip to {ns_addr}:{f.ns_port}"
    out = [f"fib daddr type local ip saddr {_set(nets)} {p} dport {f.host_port} {target}"]
    pre: list[str] = []
    remote = remote_sources(f)
    if remote:
        pre.append(
            f'iifname != "{vh}" fib daddr type local ip saddr {_set(remote)} '
            f"{p} dport {f.host_port} {target}"
        )
    return _table(
        dnat_table_name(ns, f),
        _chain("prerouting", "nat", "prerouting", -100, pre)
        + _chain("output", "nat", "output", -100, out),
    )


def guard_ruleset(ns: str, dev: str) -> str:
    """Forwarding on DEV was off and wgns turned it on: for DNATed connections only."""
    rules = [
        f'iifname "{dev}" ct status dnat accept',
        f'iifname "{dev}" counter drop comment "forwarding enabled by wgns for DNAT only"',
    ]
    return _table(guard_table_name(ns, dev), _chain("forward", "filter", "forward", 0, rules))
