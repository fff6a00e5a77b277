"""Physical mode: the machine's own interfaces moved into a `physical` namespace, the tunnel the
only interface left in the main namespace (docs/physical.md).

The same machinery as `up`: facts first (read-only: the interfaces, whether they can move,
NetworkManager, the profile, the endpoint resolved while the network is still here), then one
plan of ops applied by the executor and journaled in /run/wgns/NAME.json, so that a failure
rolls back and `down` (or `wgns recover`) after a SIGKILL at any step gives everything back.
The tunnel's target namespace is the main one and its birthplace is `physical`.

Order of `up` (each step journaled before it is applied):

1. the namespace NAME, its /etc/netns/NAME files (resolv.conf: a copy of the main one, until
   the DHCP client writes its own there), lo up inside;
2. the kill switch in the main namespace (only lo and the tunnel), and the main namespace's
   /etc/resolv.conf replaced by the tunnel's DNS;
3. the network daemons of the main namespace stopped; each interface moved into NAME
   (ethernet by rtnetlink, wireless by phy), its state kept; the daemons' systemd units
   started inside NAME;
4. the WireGuard device created in NAME, the DHCP client started inside NAME (supervised), the
   device configured while the client waits for its lease;
5. (lease obtained) the device moved into the main namespace, its addresses, MTU and routes;
6. the dead-man switch: a watcher that takes everything back if no handshake comes in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wgns import log
from wgns.engine import state
from wgns.engine.ops import (
    AddNetns,
    ConfigureWireguard,
    CreateWireguard,
    LinkUp,
    NftTable,
    Op,
    WriteNetnsFiles,
)
from wgns.errors import WgnsError
from wgns.features import (
    killswitch,
    physical_daemons,
    physical_hostdaemons,
    physical_links,
    physical_units,
)
from wgns.features.dns import dns_files
from wgns.features.physical_daemons import StartNetDaemon
from wgns.features.physical_ops import (
    RESOLV_CONF,
    ConfigureMainLink,
    MovePhy,
    MovePhysicalLink,
    MoveTunnelHome,
    ReplaceResolvConf,
)
from wgns.lifecycle import probe
from wgns.lifecycle.plan import routes_for
from wgns.lifecycle.up import apply_fresh
from wgns.profile.model import Profile
from wgns.system import names, netns
from wgns.system.links import link_exists
from wgns.wireguard import backends

KIND = "physical"  # the record's extra["kind"]
DEFAULT_NAME = "physical"
DEFAULT_DEADMAN = 30.0
DHCP = physical_hostdaemons.DHCP_CLIENTS


@dataclass(frozen=True)
class PhysicalFacts:
    chosen: physical_links.Chosen
    backend: str
    resolved: dict[str, Any]  # interface label -> Interface with endpoints resolved
    mtus: dict[str, int]
    main_resolv_conf: str
    netns_files: dict[str, str]
    snapshots: dict[str, dict[str, Any]]  # ifname -> its state before anything changes
    host_daemons: tuple[physical_hostdaemons.HostDaemon, ...] = ()
    dhcp_client: str = "dhcpcd"  # wgns's own, when no DHCP client ran here


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def gather(profile: Profile, ifaces: tuple[str, ...]) -> PhysicalFacts:
    """Everything physical `up` needs, read-only; anything that would fail fails here."""
    ns = profile.name
    if state.load(ns) is not None:
        raise WgnsError(
            f"{ns} is already up (or was interrupted)",
            hint=f"`wgns physical status`; `wgns physical down --name {ns}` gives it back",
        )
    if netns.exists(ns):
        raise WgnsError(
            f"namespace {ns} exists already and wgns did not make it; nothing was changed",
            hint=f"choose another --name, or remove it (`ip netns del {ns}`) if it is unused",
        )
    if profile.birthplace is not None:
        raise WgnsError(
            "a profile for physical mode has no birthplace: the tunnel is born in the physical "
            "namespace",
            hint="remove `birthplace` from the profile",
        )
    if profile.forwards or profile.allow_host:
        raise WgnsError("forwards and allow_host have no meaning in physical mode")
    chosen = physical_links.choose(ifaces)
    for link in chosen.links:
        physical_links.check_movable(link)
    for phy in chosen.phys:
        physical_links.check_phy_movable(phy)
    physical_links.refuse_networkmanager(chosen.ifnames)
    for iface in profile.interfaces:
        ifname = names.wg_ifname(ns, iface.name)
        if link_exists(ifname, ns=None):
            raise WgnsError(f"a link {ifname} exists already", hint=f"ip link del {ifname}")
    backend = backends.select(profile.backend).name
    # resolved now, in the main namespace, while it still has the network
    resolved = [probe.resolve_endpoints(i, where=None) for i in profile.interfaces]
    mtus = probe.mtus_for(resolved, where=None)
    files = dns_files(profile.dns, profile.dns_search, ns)
    main_resolv = _read(RESOLV_CONF)
    netns_files = {
        "resolv.conf": main_resolv or "# written by wgns: the DHCP client replaces it\n",
        "hosts": files["hosts"],
        "nsswitch.conf": files["nsswitch.conf"],
    }
    return PhysicalFacts(
        snapshots={i: physical_links.snapshot(i) for i in chosen.ifnames},
        host_daemons=tuple(physical_hostdaemons.host_daemons(bool(chosen.phys))),
        dhcp_client=physical_daemons.own_dhcp_client(),
        chosen=chosen,
        backend=backend,
        resolved={i.name: i for i in resolved},
        mtus=mtus,
        main_resolv_conf=files["resolv.conf"],
        netns_files=netns_files,
    )


def plan(profile: Profile, facts: PhysicalFacts, *, deadman: float) -> list[Op]:
    """The ops of physical `up` (see the module's docstring for the order). Pure."""
    ns = profile.name
    ifnames = [names.wg_ifname(ns, i.name) for i in profile.interfaces]
    ops: list[Op] = [
        AddNetns(ns=ns),
        WriteNetnsFiles(ns=ns, files=dict(facts.netns_files)),
        LinkUp(ns=ns, ifname="lo"),
    ]
    if profile.kill_switch:
        rules = killswitch.ruleset(names.nft_table(ns), ifnames, ipv6=profile.has_ipv6)
        ops.append(
            NftTable(ns=None, family=killswitch.FAMILY, table=names.nft_table(ns), ruleset=rules)
        )
    if profile.dns:
        ops.append(ReplaceResolvConf(content=facts.main_resolv_conf))
    # the daemons that manage these links in the main namespace stop before they move (and
    # start again once they are back, with their state); inside, units are started again and
    # the others run by wgns, with their own command lines.
    # DHCP clients stop first (while still associated: a release reaches the server) and
    # start last inside, once wpa_supplicant/iwd runs there: a unit like Debian's
    # dhcpcd@.service (`dhcpcd -w`) waits for its lease before `systemctl start` returns
    daemons = sorted(facts.host_daemons, key=lambda d: d.is_wireless)
    ops.extend(d.stop_op() for d in daemons)
    snaps = facts.snapshots
    ops.extend(MovePhysicalLink(ifname=i, ns=ns, snapshot=snaps[i]) for i in facts.chosen.links)
    ops.extend(
        MovePhy(phy=p, ns=ns, netdevs=list(d), snapshots={n: snaps[n] for n in d})
        for p, d in facts.chosen.phys.items()
    )
    moved = list(facts.chosen.ifnames)
    inside = [d.confine_op(ns, moved) for d in reversed(daemons)]

    # a DHCP client that ran by hand is started inside after the tunnel's device (which then
    # gets configured while the client waits for its lease), like wgns's own
    def is_late(op: Op) -> bool:
        return isinstance(op, StartNetDaemon) and op.daemon in DHCP

    ops.extend(op for op in inside if not is_late(op))
    # wireguard-go starts (~4 ms) while the DHCP client is started; the device is configured
    # while the client waits for its lease (the executor runs those beside it)
    for ifname in ifnames:
        ops.append(CreateWireguard(ifname=ifname, backend=facts.backend, birthplace=ns, target=ns))
    ops.extend(op for op in inside if is_late(op))
    if moved and not any(d.name in DHCP for d in facts.host_daemons):
        ops.append(StartNetDaemon(daemon=facts.dhcp_client, ns=ns, ifnames=moved))
    for iface, ifname in zip(profile.interfaces, ifnames, strict=True):
        ops.append(
            ConfigureWireguard(
                ifname=ifname,
                ns=ns,
                backend=facts.backend,
                peers=len(iface.peers),
                config=facts.resolved[iface.name],
            )
        )
    for iface, ifname in zip(profile.interfaces, ifnames, strict=True):
        ops.append(MoveTunnelHome(ifname=ifname, source=ns))
        ops.append(
            ConfigureMainLink(
                ifname=ifname,
                addresses=[a.with_prefixlen for a in iface.addresses],
                mtu=facts.mtus[iface.name],
                routes=routes_for(iface),
            )
        )
    if deadman > 0:
        from wgns.lifecycle.physical_deadman import DeadManSwitch

        ops.append(DeadManSwitch(ns=ns, ifnames=ifnames, timeout=deadman, backend=facts.backend))
    return ops


def _record(profile: Profile, facts: PhysicalFacts) -> state.Record:
    return state.Record(
        ns=profile.name,
        created_ns=True,
        profile=str(profile.source),
        backend=facts.backend,
        phase="starting",
        birthplace=None,
        birthplace_inode=0,
        interfaces=[
            {
                "label": i.name,
                "ifname": names.wg_ifname(profile.name, i.name),
                "addresses": [a.with_prefixlen for a in i.addresses],
                "mtu": facts.mtus[i.name],
                "where": "main",
            }
            for i in profile.interfaces
        ],
        ipv6="tunnelled" if profile.has_ipv6 else "blocked",
        kill_switch=profile.kill_switch,
        extra={
            "kind": KIND,
            "nft_table": names.nft_table(profile.name),
            "physical_links": list(facts.chosen.links),
            "physical_phys": {p: list(d) for p, d in facts.chosen.phys.items()},
            "unit": physical_units.own_unit(),
        },
    )


def dry_run(profile: Profile, ifaces: tuple[str, ...], *, deadman: float) -> list[Op]:
    return plan(profile, gather(profile, ifaces), deadman=deadman)


def up(profile: Profile, ifaces: tuple[str, ...], *, deadman: float) -> state.Record:
    ns = profile.name
    if not profile.kill_switch:
        log.warning("wgns: WARNING: kill switch disabled: traffic may leave outside the tunnel")
    if not profile.dns:
        log.warning(
            "wgns: %s: the profile has no DNS: /etc/resolv.conf keeps its servers, which the "
            "main namespace may not reach any more (add DNS = to the profile)",
            ns,
        )
    with state.locked(ns) as lock:
        try:
            facts = gather(profile, ifaces)
        except BaseException:
            lock.release_files = True
            raise
        record = _record(profile, facts)
        apply_fresh(record, plan(profile, facts, deadman=deadman), lock)
    publish(record)
    return record


def publish(rec: state.Record) -> None:
    """The status bars' copy (wgns.features.statusfile, docs/status.md): the links as seen from
    inside NS and the tunnel's handshake, nothing secret; withdrawn by `down`. Never raises."""
    from wgns.features import linkinfo, statusfile

    try:
        links = linkinfo.physical_link(rec.ns)
        statusfile.publish(rec.ns, {**status_data(rec), "kind": KIND, **links})
    except (WgnsError, OSError, ValueError) as e:
        log.info("wgns: %s: cannot publish its status for status bars: %s", rec.ns, e)


def physical_records() -> list[str]:
    """The namespaces whose record is physical mode's (a damaged one counts: down says why)."""
    out = []
    for ns in state.managed():
        try:
            rec = state.load(ns)
        except WgnsError:
            out.append(ns)
            continue
        if rec is not None and rec.extra.get("kind") == KIND:
            out.append(ns)
    return out


def require_physical(ns: str) -> state.Record | None:
    rec = state.load(ns)
    if rec is not None and rec.extra.get("kind") != KIND:
        raise WgnsError(f"{ns} is a wgns namespace, not physical mode's", hint=f"wgns down {ns}")
    return rec


def down(ns: str) -> list[str] | None:
    """Everything physical `up` did, undone (wgns.lifecycle.down); the errors (None: NS was
    not up)."""
    from wgns.lifecycle import down as downing

    rec = require_physical(ns)
    result = downing.down(ns)
    if rec is not None and result.managed:
        physical_units.release_unit(rec.ns, rec.extra.get("unit"))
    return result.errors if result.managed else None


def recover() -> list[tuple[str, list[str]]]:
    """`wgns recover`: every physical namespace's record undone, the namespaces born in it
    first (`wgns up` of a profile whose birthplace is `physical`); (name, errors) of each."""
    from wgns.lifecycle import down as downing

    done = []
    for ns in physical_records():
        for other in downing.born_in(ns):  # their tunnels leave through NS: they go first
            try:
                errors = downing.down(other).errors
            except WgnsError as e:
                errors = [e.message]
            done.append((other, errors))
        try:
            done.append((ns, down(ns) or []))
        except WgnsError as e:  # a damaged record, say: the others are still given back
            done.append((ns, [e.message + (f" ({e.hint})" if e.hint else "")]))
    return done


def status_data(rec: state.Record) -> dict[str, Any]:
    """What `wgns physical status` shows, nothing secret. (For the status bar, the coordinator
    publishes this with wgns.features.statusfile.publish(ns, {**this, "kind": "physical"}),
    with wgns.features.linkinfo.physical_link(ns, links) for the links' own state.)"""
    from wgns.features.physical_daemons import StartNetDaemon
    from wgns.features.statusfile import latest_handshake
    from wgns.lifecycle.physical_deadman import DeadManSwitch

    daemons = {d.daemon: d.alive() for d in rec.find(StartNetDaemon)}
    ifnames = [str(i["ifname"]) for i in rec.interfaces]
    hs = latest_handshake(ifnames)
    switch = rec.find(DeadManSwitch)
    return {
        "ns": rec.ns,
        "phase": rec.phase,
        "links": list(rec.extra.get("physical_links", [])),
        "phys": dict(rec.extra.get("physical_phys", {})),
        "tunnel": ifnames,
        "latest_handshake": hs,
        "daemons": daemons,
        "deadman": (switch[0].state() if switch else "off"),
    }
