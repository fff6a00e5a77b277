"""Profile + facts about the system -> the list of operations for `up`. Pure: no I/O.

Facts (does the namespace exist, which backend, endpoint addresses, MTUs) are gathered
beforehand by `wgns.lifecycle.probe`, read-only, so that a profile that cannot work is refused
before the first change. The order of the plan is its safety (tests/lifecycle/test_plan.py):
the kill switch is in place before the first address, route or link up; forwards come once the
tunnel is up; hooks run where wg-quick runs them (PreUp before the interface exists, PostUp once
it is up; PreDown/PostDown are journaled, as DownHook ops, for `down` to run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgns.engine.ops import (
    AddNetns,
    ConfigureLink,
    ConfigureWireguard,
    CreateWireguard,
    LinkUp,
    MoveLink,
    NftTable,
    Op,
    RunHook,
    WriteNetnsFiles,
)
from wgns.features import killswitch
from wgns.features.etcview import MountEtcView
from wgns.profile.model import Hook, HookWhen, Interface, Profile
from wgns.system import names
from wgns.wireguard import backends

if TYPE_CHECKING:
    from wgns.features.container import Placement

# Ops that make (or remake) one wg interface: what a repair of a broken tunnel redoes
TUNNEL_OPS = (CreateWireguard, MoveLink, ConfigureWireguard, ConfigureLink)


@dataclass(frozen=True)
class Facts:
    ns_exists: bool
    backend: str  # a backend's name (wgns.wireguard.backends)
    mtus: dict[str, int]  # interface label -> MTU to apply
    resolved: dict[str, Interface]  # interface label -> the interface, endpoints resolved
    netns_files: dict[str, str] = field(default_factory=dict)
    openings: tuple[killswitch.Opening, ...] = ()
    container: Placement | None = None  # a container's namespace (issue 16; ns_exists is True)


def moves_device(backend: str) -> bool:
    """The backend's device is born in the birthplace and moved into the namespace (userspace),
    not created inside it from the birthplace (kernel)."""
    return backends.get(backend).moves_device


def routes_for(iface: Interface) -> list[list[str | int | None]]:
    """wg-quick's routes: one per AllowedIPs prefix, most specific first, as [prefix, table]
    (table None: main); Table=off: none."""
    if iface.table is not None and iface.table.lower() == "off":
        return []
    table = None
    if iface.table is not None and iface.table.lower() != "auto":
        table = int(iface.table)
    nets = {n for p in iface.peers for n in p.allowed_ips}
    ordered = sorted(nets, key=lambda n: (-n.prefixlen, n.version, str(n)))
    return [[str(net), table] for net in ordered]


def _without_replace_prelude(rules: str) -> str:
    """In a namespace wgns has just created there is no table to replace; the `delete table`
    that makes a replacement atomic costs an RCU grace period (~10-15 ms), so leave it out."""
    return "".join(
        line
        for line in rules.splitlines(keepends=True)
        if not line.startswith("delete table ") and not line.rstrip().endswith(" {}")
    )


def kill_switch_op(profile: Profile, facts: Facts, *, fresh: bool) -> NftTable:
    """The kill switch table; FRESH: in a namespace this plan creates (nothing to replace)."""
    ns = profile.name
    table = names.nft_table(ns)
    ifnames = [names.wg_ifname(ns, i.name) for i in profile.interfaces]
    rules = killswitch.ruleset(table, ifnames, ipv6=profile.has_ipv6, openings=facts.openings)
    if fresh:
        rules = _without_replace_prelude(rules)
    return NftTable(ns=ns, family=killswitch.FAMILY, table=table, ruleset=rules)


def _hooks_of(profile: Profile, iface: Interface) -> tuple[Hook, ...]:
    """IFACE's own hooks, and the profile's on the first interface (run once)."""
    return (*iface.hooks, *(profile.hooks if iface is profile.interfaces[0] else ()))


def _where(profile: Profile, hook: Hook) -> str | None:
    return profile.name if hook.where.value == "inside" else profile.birthplace


def run_hooks(profile: Profile, when: str, iface: Interface) -> list[Op]:
    ifname = names.wg_ifname(profile.name, iface.name)
    return [
        RunHook(when=when, command=h.command, ns=_where(profile, h), ifname=ifname)
        for h in _hooks_of(profile, iface)
        if h.when.value == when
    ]


_AT_DOWN = (HookWhen.PRE_DOWN, HookWhen.POST_DOWN)


def down_hooks(profile: Profile) -> list[Op]:
    """The PreDown/PostDown commands, as journal data for `down` (the profile may change)."""
    out: list[Op] = []
    if not any(h.when in _AT_DOWN for i in profile.interfaces for h in _hooks_of(profile, i)):
        return out  # and wgns.lifecycle.ops need not be imported
    from wgns.lifecycle.ops import DownHook

    for iface in profile.interfaces:
        ifname = names.wg_ifname(profile.name, iface.name)
        for h in _hooks_of(profile, iface):
            if h.when in _AT_DOWN:
                out.append(
                    DownHook(
                        when=h.when.value, command=h.command, ns=_where(profile, h), ifname=ifname
                    )
                )
    return out


def tunnel_ops(profile: Profile, facts: Facts, iface: Interface, *, fresh: bool) -> list[Op]:
    """The ops making IFACE's device (not its creation when it is started early, see plan_up)
    up to its link state; FRESH: the namespace is created by this plan (lo is brought up with
    the first interface's link)."""
    ns = profile.name
    ifname = names.wg_ifname(ns, iface.name)
    moved = moves_device(facts.backend)
    ops: list[Op] = []
    if moved:  # moved while the daemon is configured (see MoveLink.apply)
        ops.append(MoveLink(ifname=ifname, source=profile.birthplace, target=ns))
    ops.append(
        ConfigureWireguard(
            ifname=ifname,
            ns=backends.get(facts.backend).configured_in(ns, profile.birthplace),
            backend=facts.backend,
            peers=len(iface.peers),
            config=facts.resolved[iface.name],
        )
    )
    ops.append(
        ConfigureLink(
            ns=ns,
            ifname=ifname,
            addresses=[a.with_prefixlen for a in iface.addresses],
            mtu=facts.mtus[iface.name],
            routes=routes_for(iface),
            lo_up=fresh and iface is profile.interfaces[0],
        )
    )
    return ops


def create_op(profile: Profile, facts: Facts, iface: Interface) -> CreateWireguard:
    return CreateWireguard(
        ifname=names.wg_ifname(profile.name, iface.name),
        backend=facts.backend,
        birthplace=profile.birthplace,
        target=profile.name,
    )


def plan_up(profile: Profile, facts: Facts) -> list[Op]:
    ns = profile.name
    ops: list[Op] = []
    fresh = not facts.ns_exists
    if facts.container is not None:  # named first, so that its name goes last at `down`
        ops.extend(facts.container.attach_ops(ns))
    # wireguard-go takes ~4 ms to answer; started first, it comes up while the namespace and its
    # files are made (the executor runs those beside it; see docs/architecture.md, Executor).
    # Not when PreUp hooks must run before the interface exists (wg-quick's order), nor for the
    # kernel's device, which is created inside the namespace.
    early = moves_device(facts.backend) and not any(
        h.when.value == "pre-up" for i in profile.interfaces for h in _hooks_of(profile, i)
    )
    if early:
        ops.extend(create_op(profile, facts, i) for i in profile.interfaces)
    if fresh:
        ops.append(AddNetns(ns=ns))
    kill_switch = kill_switch_op(profile, facts, fresh=fresh) if profile.kill_switch else None
    if kill_switch is not None and not early:
        ops.append(kill_switch)
    if facts.netns_files:
        ops.append(WriteNetnsFiles(ns=ns, files=dict(facts.netns_files)))
        # the view a confined unit binds over /etc (wgns.features.etcview)
        ops.append(MountEtcView(ns=ns, files=dict(facts.netns_files)))
    if facts.container is not None:  # the container's own resolv.conf
        ops.extend(facts.container.dns_ops())
    for iface in profile.interfaces:
        ops.extend(run_hooks(profile, "pre-up", iface))
        if not early:
            ops.append(create_op(profile, facts, iface))
        made = tunnel_ops(profile, facts, iface, fresh=fresh)
        if early and iface is profile.interfaces[0] and kill_switch is not None:
            # nft then runs during the move's kernel wait, not while the daemon starts; it is
            # in place before anything can carry a packet (ConfigureLink waits for it)
            made.insert(1, kill_switch)
        if facts.ns_exists and iface is profile.interfaces[0]:
            made.insert(-1, LinkUp(ns=ns, ifname="lo"))
        ops.extend(made)
    # issue 5: the profile's [[forward]]s and allow_host, once the tunnel is up
    if profile.forwards or profile.allow_host:
        from wgns.features.forward import plan as forward_plan

        spec = killswitch.spec_for(profile, facts.openings) if profile.kill_switch else None
        ops.extend(forward_plan.ops_for_profile(ns, profile.forwards, profile.allow_host, spec))
    for iface in profile.interfaces:
        ops.extend(run_hooks(profile, "post-up", iface))
    ops.extend(down_hooks(profile))
    return ops


# What the state record says of a profile (up writes it, reload compares and rewrites it)


def forwards_json(profile: Profile) -> list[dict[str, object]]:
    if not profile.forwards:
        return []
    from wgns.features.forward import spec as forward

    return [forward.to_json(f) for f in profile.forwards]


def interfaces_json(profile: Profile, facts: Facts) -> list[dict[str, object]]:
    return [
        {
            "label": i.name,
            "ifname": names.wg_ifname(profile.name, i.name),
            "addresses": [a.with_prefixlen for a in i.addresses],
            "mtu": facts.mtus[i.name],
        }
        for i in profile.interfaces
    ]


def ipv6_mode(profile: Profile) -> str:
    return "tunnelled" if profile.has_ipv6 else ("blocked" if profile.kill_switch else "open")
