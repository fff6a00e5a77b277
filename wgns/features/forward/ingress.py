"""Which interfaces of the host packets from a ``--from`` network arrive on.

IPv4 forwarding is decided by the interface a packet arrives on, so a nat forward from remote
sources needs forwarding on each interface the routes back to those sources leave through. A
network may span several interfaces (a /23 over two LANs), and it usually contains the host's
own address on that LAN (a ``local`` route), so a single probe address is not enough: the
network is cut along every route that overlaps it, and one address of each piece that no more
specific route covers is asked (`ip route get`, policy rules included). Answers that are not
unicast (the host's own addresses, broadcasts, blackholes) lead nowhere and are skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from wgns.features.forward import claims

IPv4Net = ipaddress.IPv4Network
MAX_PIECES = 64  # of one --from network: beyond that, the routes are not a LAN's


def _route_nets(routes: Iterable[dict[str, Any]]) -> list[IPv4Net]:
    out: list[IPv4Net] = []
    for r in routes:
        dst = str(r.get("dst", ""))
        if not dst or dst == "default":
            continue
        try:
            out.append(IPv4Net(dst, strict=False))
        except ValueError:
            continue
    return out


def probe_addresses(net: IPv4Net, route_nets: Sequence[IPv4Net]) -> list[str]:
    """One address of NET per piece its overlapping routes cut it into (pure).

    Pieces are NET itself and the part of NET of each route overlapping it; for each piece, an
    address not covered by a more specific piece stands for it (the route that piece decides)."""
    pieces = {net}
    for r in route_nets:
        if r.subnet_of(net):
            pieces.add(r)
        elif net.subnet_of(r):
            continue  # a wider route: NET itself stands for it
    ordered = sorted(pieces, key=lambda p: (p.prefixlen, p.network_address))[:MAX_PIECES]
    out: list[str] = []
    for piece in ordered:
        rest = [piece]
        for other in pieces:
            if other != piece and other.subnet_of(piece):
                rest = [part for block in rest for part in _exclude(block, other)]
        if not rest:
            continue
        block = max(rest, key=lambda b: b.num_addresses)
        addr = block.network_address + (1 if block.num_addresses > 2 else 0)
        out.append(str(addr))
    return out


def _exclude(block: IPv4Net, other: IPv4Net) -> list[IPv4Net]:
    if other.subnet_of(block):
        return list(block.address_exclude(other))
    if block.subnet_of(other):
        return []
    return [block]


def ingress_interfaces(nets: Sequence[IPv4Net]) -> list[str]:
    """The interfaces packets from NETS arrive on (the routes back to them), in order."""
    if not nets:
        return []
    routes = claims.ip_json_batch(["route show table all"], ["-4"])
    route_nets = _route_nets(routes)
    probes: list[str] = []
    for net in nets:
        probes += [a for a in probe_addresses(net, route_nets) if a not in probes]
    found: list[str] = []
    for r in claims.ip_json_batch([f"route get {a}" for a in probes], ["-4"]):
        dev = r.get("dev")
        if dev and dev != "lo" and r.get("type", "unicast") == "unicast" and dev not in found:
            found.append(str(dev))
    return found
