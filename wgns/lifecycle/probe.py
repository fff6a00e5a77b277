"""Read-only facts about the system, gathered before `up` changes anything."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from wgns.errors import WgnsError
from wgns.profile.model import Endpoint, Interface, Peer
from wgns.profile.values import is_ip

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wgns.engine.state import Record
    from wgns.profile.model import Profile

DEFAULT_MTU = 1500
WG_OVERHEAD = 80  # IPv6 (40) + UDP (8) + WireGuard (32): wg-quick's margin
RESOLVE_TIMEOUT = float(os.environ.get("WGNS_RESOLVE_TIMEOUT", "15"))


def resolve_host(
    host: str, port: int, *, where: str | None, timeout: float = RESOLVE_TIMEOUT
) -> str:
    """HOST -> an address literal, looked up from the birthplace namespace WHERE (None: the one
    wgns runs in), retrying while the resolver is temporarily unreachable (boot, network change).
    IPv4 preferred, as `wg` does.

    A named birthplace is asked as `wgns exec WHERE` would ask it: with /etc/netns/WHERE's
    resolv.conf (that of the "physical" namespace, say) and without the host's nscd or
    systemd-resolved, which resolve over the host's network, not WHERE's."""
    if is_ip(host):
        return host
    if where is None:
        return _lookup(host, port, timeout)
    from wgns.system import execview

    return execview.call_in_view(where, lambda: _lookup(host, port, timeout))


def _lookup(host: str, port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
        except socket.gaierror as e:
            if e.errno == socket.EAI_AGAIN and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            raise WgnsError(
                f"cannot resolve endpoint {host}: {e.strerror}",
                hint="check the Endpoint, or the DNS of the namespace the tunnel starts from",
            ) from None
        v4 = [i for i in infos if i[0] == socket.AF_INET]
        chosen = (v4 or infos)[0]
        return str(chosen[4][0])


def resolve_endpoints(iface: Interface, *, where: str | None) -> Interface:
    peers: list[Peer] = []
    for p in iface.peers:
        if p.endpoint is not None and not is_ip(p.endpoint.host):
            addr = resolve_host(p.endpoint.host, p.endpoint.port, where=where)
            p = replace(p, endpoint=Endpoint(addr, p.endpoint.port))
        peers.append(p)
    return replace(iface, peers=tuple(peers))


def mtus_for(ifaces: Sequence[Interface], *, where: str | None) -> dict[str, int]:
    """wg-quick's MTU rule for interfaces without MTU=: the largest MTU of the links the
    endpoints are routed over (else of the default route's link, else 1500), minus 80.
    Asked over netlink (wgns.system.rtnl) in WHERE, the namespace the tunnel's packets leave
    from."""
    out: dict[str, int] = {}
    need = [i for i in ifaces if i.mtu is None]
    for i in ifaces:
        if i.mtu is not None:
            out[i.name] = i.mtu
    if not need:
        return out
    from wgns.system import rtnl

    endpoints = sorted({p.endpoint.host for i in need for p in i.peers if p.endpoint})
    routes: dict[str, tuple[str | None, int | None]] = {}
    try:
        with rtnl.Rtnl(where) as nl:
            links = nl.link_mtus()
            for e in endpoints:
                try:
                    routes[e] = nl.route_get(e)
                except OSError:  # unreachable from here now: the default route's link decides
                    continue
            default = nl.default_routes()
    except OSError as e:
        raise WgnsError(f"cannot read routes{' in ' + where if where else ''}: {e}") from None

    def route_mtu(route: tuple[str | None, int | None]) -> int:
        dev, metric = route
        return metric if metric else links.get(dev or "", 0)

    for i in need:
        mtu = 0
        for p in i.peers:
            if p.endpoint and p.endpoint.host in routes:
                mtu = max(mtu, route_mtu(routes[p.endpoint.host]))
        if mtu == 0 and default:
            mtu = route_mtu(default[0])
        out[i.name] = (mtu or DEFAULT_MTU) - WG_OVERHEAD
    return out


def leftovers(profile: Profile) -> list[str]:
    """What is in the way of a fresh `up` of PROFILE when NS has no record: things with the
    names this `up` would make (a tunnel whose record was deleted by hand, say). Each is one
    line saying what exists and how to remove it; `up` refuses before touching anything, so
    that its rollback can never delete what it did not make."""
    from wgns.features import killswitch
    from wgns.system import names, netns
    from wgns.system.links import link_exists
    from wgns.wireguard import uapi

    ns = profile.name
    ns_exists = netns.exists(ns)
    found: list[str] = []
    places = [profile.birthplace, *([ns] if ns_exists else [])]
    for iface in profile.interfaces:
        ifname = names.wg_ifname(ns, iface.name)
        for where in places:
            if link_exists(ifname, ns=where):
                ip = f"ip -n {where}" if where else "ip"
                place = f"namespace {where}" if where else "this namespace"
                found.append(
                    f"interface {ifname} already exists in {place}: `{ip} link del {ifname}`"
                )
        sock = uapi.uapi_socket(ifname)
        if uapi.listening(sock):
            found.append(
                f"a wireguard-go serving {ifname} is running ({sock}): stop it "
                "(`ps -C wireguard-go -o pid,args` shows its pid)"
            )
    if ns_exists and profile.kill_switch:
        table = names.nft_table(ns)
        if killswitch.live(table, ns=ns) is not None:
            found.append(
                f"nft table {killswitch.FAMILY} {table} already exists in {ns}: "
                f"`ip netns exec {ns} nft delete table {killswitch.FAMILY} {table}`"
            )
    return found


def broken(rec: Record) -> tuple[bool, list[str]]:
    """What is wrong with NS, recorded as up: (is its namespace gone, the problems as lines).
    No problems: it is up as recorded. Birthplace and daemons are judged as `wgns status` judges
    them (wgns.features.check.health)."""
    from wgns.features.check import health
    from wgns.system import netns

    if "container" in rec.extra:  # its process gone or restarted: a fresh `up` (issue 16)
        from wgns.features import container

        why = container.stale(rec)
        if why is not None:
            return True, [why]
    if not netns.exists(rec.ns):
        return True, [f"namespace {rec.ns} does not exist any more (deleted by hand?)"]
    dead = _dead_daemons(rec)
    missing = [
        f"interface {ifname} is missing from {rec.ns}"
        for ifname in _wg_ifnames(rec)
        if ifname not in dead and _missing(rec, ifname)
    ]
    view = [f"its /etc view {etcview_of(rec)} is not mounted"] if view_missing(rec) else []
    return False, health.birthplace_problems(rec) + health.daemon_problems(rec) + missing + view


def etcview_of(rec: Record) -> str:
    from wgns.features import etcview

    return etcview.etc_of(rec.ns)


def view_missing(rec: Record) -> bool:
    """REC's `up` mounted an /etc view (wgns.features.etcview) and it is not mounted now."""
    from wgns.features import etcview

    mounts = [op for op in rec.find(etcview.MountEtcView) if op.ns == rec.ns]
    return bool(mounts) and not etcview.mounted(rec.ns)


def broken_ifnames(rec: Record) -> list[str]:
    """The recorded wg interfaces whose device is gone or whose daemon died; all of them when
    the birthplace was replaced since `up` (their UDP sockets live in the old one)."""
    from wgns.features.check import health

    if health.birthplace_problems(rec):
        return _wg_ifnames(rec)
    dead = _dead_daemons(rec)
    return [i for i in _wg_ifnames(rec) if i in dead or _missing(rec, i)]


def _wg_ifnames(rec: Record) -> list[str]:
    from wgns.engine.ops import CreateWireguard

    return [op.ifname for op in rec.find(CreateWireguard)]


def _dead_daemons(rec: Record) -> set[str]:
    from wgns.features.check import health

    return {d.ifname for d in health.daemons(rec).values() if not d.alive}


def _missing(rec: Record, ifname: str) -> bool:
    from wgns.system.links import link_exists

    return not link_exists(ifname, ns=rec.ns)
