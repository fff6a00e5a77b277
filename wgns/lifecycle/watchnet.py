"""What the health loop does to the system: watch the birthplace's network, notice a resume,
force a fresh handshake, look an endpoint up again and move a peer to its new address.

Why force a handshake: WireGuard initiates at most one handshake per REKEY_TIMEOUT (5 s) per
peer and retries every 5 s (kernel: send.c wg_packet_send_queued_handshake_initiation checks
last_sent_handshake; wireguard-go: send.go SendHandshakeInitiation checks lastSentHandshake).
After the network comes back, a retry that failed just before makes the next one wait up to
5 s more. A peer removed and added again starts with no handshake history, so its next packet
initiates at once; and a persistent keepalive switched on from 0 sends a packet at once (kernel
netlink.c set_peer: send_keepalive when the interval goes from 0 to N with the device up;
wireguard-go uapi.go: pkaOn, then SendKeepalive in handlePostConfig). Both backends take the
same `wg syncconf` (the backend's sync) for the three steps: the peer left out, the peer back
with a keepalive interval (its own, or 1 s when it has none), then exactly the configuration
again. The device, its addresses and routes, the namespace, the kill switch and the processes
inside are never touched; a packet sent by a process inside in the few milliseconds the peer
is away is dropped (TCP sends it again).
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from wgns.lifecycle.watchlogic import NEWADDR, NEWLINK, NEWROUTE, NetEvent
from wgns.profile.model import Endpoint
from wgns.profile.values import Invalid, is_ip, parse_endpoint
from wgns.system import netns
from wgns.system.rtnlmsg import (
    IFADDRMSG,
    IFINFOMSG,
    IFLA_IFNAME,
    NLMSGHDR,
    RTA_TABLE,
    RTM_F_CLONED,
    RTMSG,
    cstr,
    parse_attrs,
    read_u32,
    route_oif,
)

if TYPE_CHECKING:
    from wgns.profile.model import Interface
    from wgns.wireguard.backends import WireguardBackend
    from wgns.wireguard.dump import DeviceState

# linux/rtnetlink.h: RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR,
# RTMGRP_IPV6_ROUTE
GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
KICK_KEEPALIVE = 1  # seconds: the interval switched on for a peer that has none, then off


def parse_events(data: bytes, names: dict[int, str]) -> list[NetEvent]:
    """The link, address and route notifications in one netlink datagram DATA. NAMES maps
    ifindex -> name: link messages add to it, addresses and routes are named from it (an
    index it lacks gives ifname None)."""
    events = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < 16 or offset + length > len(data):
            break
        msg = data[offset : offset + length]
        offset += (length + 3) & ~3
        base = kind & ~1  # NEW and DEL share a base: RTM_NEW* is even, RTM_DEL* the next one
        if base == NEWLINK and len(msg) >= 16 + IFINFOMSG.size:
            _family, _type, index, flags, _change = IFINFOMSG.unpack_from(msg, 16)
            attrs = parse_attrs(msg, 16 + IFINFOMSG.size)
            if IFLA_IFNAME in attrs:
                names[index] = cstr(attrs[IFLA_IFNAME])
            events.append(NetEvent(kind, names.get(index), flags=flags))
        elif base == NEWADDR and len(msg) >= 16 + IFADDRMSG.size:
            index = IFADDRMSG.unpack_from(msg, 16)[4]
            events.append(NetEvent(kind, names.get(index)))
        elif base == NEWROUTE and len(msg) >= 16 + RTMSG.size:
            fields = RTMSG.unpack_from(msg, 16)
            attrs = parse_attrs(msg, 16 + RTMSG.size)
            table = read_u32(attrs.get(RTA_TABLE)) or fields[4]
            oif = route_oif(attrs)
            name = names.get(oif) if oif is not None else None
            events.append(NetEvent(kind, name, table=table, cloned=bool(fields[8] & RTM_F_CLONED)))
    return events


class NetMonitor:
    """A NETLINK_ROUTE socket subscribed to the link, address and route groups of the
    birthplace BIRTHPLACE (None: the namespace wgns runs in), non-blocking."""

    def __init__(self, birthplace: str | None) -> None:
        self.birthplace = birthplace
        with netns.entered(birthplace):  # a netlink socket belongs to its creator's namespace
            self.sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )
            self.names = _link_names()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, GROUPS))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> list[NetEvent]:
        """Every notification queued since the last call. An overrun socket (ENOBUFS: more
        events than it holds) stands for a change of its own."""
        events: list[NetEvent] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return events
            except OSError:  # ENOBUFS: notifications were lost; something changed
                events.append(NetEvent(NEWLINK, None, flags=0x1 | 0x10000))
                continue
            events += parse_events(data, self.names)

    def close(self) -> None:
        self.sock.close()


def _link_names() -> dict[int, str]:
    with contextlib.suppress(OSError):
        return {index: name for index, name in socket.if_nameindex()}
    return {}


def suspend_gap() -> float:
    """CLOCK_BOOTTIME - CLOCK_MONOTONIC: the seconds spent suspended since boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)


def live_config(iface: Interface, device: DeviceState) -> Interface:
    """IFACE (the profile's, keys included) with each peer's endpoint as the device has it now:
    the address a host name resolved to, or the one the peer roamed to. Never a host name,
    which `wg` would look up itself, from wherever it runs."""
    live = {p.public_key: p.endpoint for p in device.peers}
    peers = []
    for p in iface.peers:
        endpoint = _endpoint(live.get(p.public_key)) or (
            p.endpoint if p.endpoint is not None and is_ip(p.endpoint.host) else None
        )
        peers.append(replace(p, endpoint=endpoint))
    return replace(iface, peers=tuple(peers))


def _endpoint(text: str | None) -> Endpoint | None:
    if text is None:
        return None
    try:
        return parse_endpoint(text)
    except Invalid:
        return None


def kick(
    backend: WireguardBackend,
    ifname: str,
    config: Interface,
    ns: str,
    keys: frozenset[str],
    *,
    endpoints: dict[str, Endpoint] | None = None,
) -> None:
    """Force a fresh handshake with the peers KEYS of IFNAME (the device in NS), whose full
    configuration is CONFIG (live_config's): each is removed and added back, moved to
    ENDPOINTS[key] when given, with a keepalive sent at once. See the module's docstring."""
    moved = dict(endpoints or {})
    target = replace(
        config,
        peers=tuple(
            replace(p, endpoint=moved[p.public_key]) if p.public_key in moved else p
            for p in config.peers
        ),
    )
    without = replace(target, peers=tuple(p for p in target.peers if p.public_key not in keys))
    kicked = replace(
        target,
        peers=tuple(
            replace(p, persistent_keepalive=p.persistent_keepalive or KICK_KEEPALIVE)
            if p.public_key in keys and p.endpoint is not None
            else p
            for p in target.peers
        ),
    )
    # `wg syncconf` leaves what a peer's section does not say as it is: the interval switched
    # on is switched off again by saying 0
    restored = replace(
        target,
        peers=tuple(
            replace(p, persistent_keepalive=p.persistent_keepalive or 0)
            if p.public_key in keys
            else p
            for p in target.peers
        ),
    )
    backend.sync(ifname, without, ns)
    backend.sync(ifname, kicked, ns)
    if kicked != restored:
        backend.sync(ifname, restored, ns)


def routable(host: str, birthplace: str | None) -> bool:
    """Whether the birthplace has a route to HOST now (`ip route get`)."""
    from wgns.system import rtnl

    try:
        with rtnl.Rtnl(birthplace) as nl:
            nl.route_get(host)
    except (OSError, ValueError):
        return False
    return True
