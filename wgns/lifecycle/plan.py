"""Profile + facts about the system -> the list of operations for `up`. Pure: no I/O.

Facts (does the namespace exist, which backend, endpoint addresses, MTUs) are gathered
beforehand by `wgns.lifecycle.probe`, read-only, so that a profile that cannot work is refused
before the first change.
"""

from __future__ import annotations

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
from wgns.profile.model import Interface, Profile
from wgns.system import names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable


class Facts:
    """A plain class, not a dataclass: creating one costs ~0.5 ms of every `wgns up`."""

    __slots__ = ("backend", "mtus", "netns_files", "ns_exists", "openings", "resolved")

    def __init__(
        self,
        *,
        ns_exists: bool,
        backend: str,  # "kernel" | "userspace"
        mtus: dict[str, int],  # interface label -> MTU to apply
        resolved: dict[str, Interface],  # interface label -> the interface, endpoints resolved
        netns_files: dict[str, str] | None = None,
        openings: tuple[killswitch.Opening, ...] = (),
    ) -> None:
        self.ns_exists = ns_exists
        self.backend = backend
        self.mtus = mtus
        self.resolved = resolved
        self.netns_files: dict[str, str] = {} if netns_files is None else netns_files
        self.openings = openings


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


def plan_up(profile: Profile, facts: Facts) -> list[Op]:
    ns = profile.name
    bp = profile.birthplace
    ops: list[Op] = []
    ifnames = [names.wg_ifname(ns, i.name) for i in profile.interfaces]

    def create(ifname: str) -> CreateWireguard:
        return CreateWireguard(ifname=ifname, backend=facts.backend, birthplace=bp, target=ns)

    # wireguard-go takes ~4 ms to answer; started first, it comes up while the namespace and its
    # files are made (the executor runs those beside it; see docs/architecture.md, Executor).
    # Not when PreUp hooks must run before the interface exists (wg-quick's order), nor for the
    # kernel's device, which is created inside the namespace.
    early = facts.backend == "userspace" and not any(
        h.when.value == "pre-up" for i in profile.interfaces for h in (*profile.hooks, *i.hooks)
    )
    if early:
        ops.extend(create(ifname) for ifname in ifnames)
    if not facts.ns_exists:
        ops.append(AddNetns(ns=ns))
    kill_switch = None
    if profile.kill_switch:
        table = names.nft_table(ns)
        rules = killswitch.ruleset(table, ifnames, ipv6=profile.has_ipv6, openings=facts.openings)
        if not facts.ns_exists:
            rules = _without_replace_prelude(rules)
        kill_switch = NftTable(ns=ns, family=killswitch.FAMILY, table=table, ruleset=rules)
        if not early:
            ops.append(kill_switch)
    if facts.netns_files:
        ops.append(WriteNetnsFiles(ns=ns, files=dict(facts.netns_files)))

    def hooks(when: str, iface: Interface, ifname: str) -> list[Op]:
        out: list[Op] = []
        for h in (*profile.hooks, *iface.hooks):
            if h.when.value == when and (h in iface.hooks or iface is profile.interfaces[0]):
                where = ns if h.where.value == "inside" else bp
                out.append(RunHook(when=when, command=h.command, ns=where, ifname=ifname))
        return out

    for iface, ifname in zip(profile.interfaces, ifnames, strict=True):
        ops.extend(hooks("pre-up", iface, ifname))
        if not early:
            ops.append(create(ifname))
        kernel = facts.backend == "kernel"  # a kernel device is created inside ns directly
        if not kernel:  # moved while the daemon is configured (see MoveLink.apply)
            ops.append(MoveLink(ifname=ifname, source=bp, target=ns))
        first = iface is profile.interfaces[0]
        if early and first and kill_switch is not None:
            # nft then runs during the move's kernel wait, not while the daemon starts; it is
            # in place before anything can carry a packet (ConfigureLink waits for it)
            ops.append(kill_switch)
        cfg = ConfigureWireguard(
            ifname=ifname,
            ns=ns if kernel else bp,
            backend=facts.backend,
            peers=len(iface.peers),
            config=facts.resolved[iface.name],
        )
        ops.append(cfg)
        if first and facts.ns_exists:
            ops.append(LinkUp(ns=ns, ifname="lo"))
        ops.append(
            ConfigureLink(
                ns=ns,
                ifname=ifname,
                addresses=[a.with_prefixlen for a in iface.addresses],
                mtu=facts.mtus[iface.name],
                routes=routes_for(iface),
                lo_up=first and not facts.ns_exists,
            )
        )
    # issue 5: the profile's [[forward]]s and allow_host, once the tunnel is up
    # else wgns.features.forward need not even be imported
    if profile.forwards or profile.allow_host:
        from wgns.features import forward

        spec = killswitch.spec_for(profile, facts.openings) if profile.kill_switch else None
        fwd = forward.plan_op(ns, profile.forwards, profile.allow_host, spec)
        if fwd is not None:
            ops.append(fwd)
    for iface, ifname in zip(profile.interfaces, ifnames, strict=True):
        ops.extend(hooks("post-up", iface, ifname))
    return ops


def down_hooks(profile: Profile) -> list[dict[str, str | None]]:
    """PreDown/PostDown commands as stored in the state record (the profile may change later)."""
    out: list[dict[str, str | None]] = []
    for iface in profile.interfaces:
        ifname = names.wg_ifname(profile.name, iface.name)
        for h in (*iface.hooks, *(profile.hooks if iface is profile.interfaces[0] else ())):
            if h.when.value in ("pre-down", "post-down"):
                where = profile.name if h.where.value == "inside" else profile.birthplace
                out.append(
                    {"when": h.when.value, "command": h.command, "ns": where, "ifname": ifname}
                )
    return out


if TYPE_CHECKING:
    Planner = Callable[[Profile, Facts], list[Op]]
