"""`up --reload`: a plan from the difference between the record and the profile, applied by the
executor. What can be changed in place is (routes, addresses, MTU, DNS files, peers and keys,
the kill switch, down hooks); what cannot (interfaces added or removed, birthplace, backend,
forwards) is refused by name before anything changes. Afterwards the record describes the new
state exactly: the changes are journaled like `up`'s ops, so `down` undoes them too.

Order: the kill switch (added or replaced) first, before anything new can carry traffic; then
links (what goes is removed before what comes is added), DNS files (and their copies in the /etc
view, rewritten in place: see wgns.features.etcview), and the peers last (the one
change that cannot be undone: old keys are never recorded); a kill switch turned off is removed
once all that is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wgns.engine import state
from wgns.engine.executor import Executor
from wgns.engine.ops import ConfigureLink, NftTable, Op, WriteNetnsFiles
from wgns.errors import WgnsError
from wgns.features import containerdns, etcview, killswitch
from wgns.lifecycle.ops import DownHook, ReconfigureLink, ReplaceNftTable, SyncWireguard
from wgns.lifecycle.plan import (
    Facts,
    _without_replace_prelude,
    down_hooks,
    forwards_json,
    interfaces_json,
    ipv6_mode,
    kill_switch_op,
    routes_for,
)
from wgns.profile.model import Profile
from wgns.system import names


@dataclass
class ReloadPlan:
    ops: list[Op]  # applied in order by the executor
    remove_kill_switch: bool = False  # then: the kill switch's table undone
    changes: list[str] = field(default_factory=list)  # what the reload does, for the user


def _refusals(profile: Profile, rec: state.Record, facts: Facts) -> list[str]:
    out = []
    had = [str(i["label"]) for i in rec.interfaces]
    has = [i.name for i in profile.interfaces]
    if had != has:
        added = [x for x in has if x not in had]
        removed = [x for x in had if x not in has]
        what = (
            "; ".join(
                s
                for s in (
                    f"added {', '.join(added)}" if added else "",
                    f"removed {', '.join(removed)}" if removed else "",
                )
                if s
            )
            or "reordered"
        )
        out.append(f"interfaces ({what})")
    if rec.birthplace != profile.birthplace:
        out.append(f"birthplace ({rec.birthplace or 'none'} -> {profile.birthplace or 'none'})")
    if rec.backend != facts.backend:
        out.append(f"backend ({rec.backend} -> {facts.backend})")
    if rec.extra.get("forwards", []) != forwards_json(profile):
        out.append("forwards (use `wgns forward add/remove`)")
    if rec.extra.get("allow_host", list(profile.allow_host)) != list(profile.allow_host):
        out.append("allow_host")
    return out


def _link_state(ops: list[Op], ifname: str) -> dict[str, Any] | None:
    """IFNAME's addresses, MTU and routes as the journal last set them."""
    found = None
    for op in ops:
        if isinstance(op, ConfigureLink) and op.ifname == ifname:
            found = {"addresses": op.addresses, "mtu": op.mtu, "routes": op.routes}
        elif isinstance(op, ReconfigureLink) and op.ifname == ifname:
            found = op.after
    return found


def _link_changes(ifname: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key, what in (("routes", "routes"), ("addresses", "addresses")):
        old_items = [str(x[0]) if key == "routes" else str(x) for x in old[key]]
        new_items = [str(x[0]) if key == "routes" else str(x) for x in new[key]]
        plus = [f"+{x}" for x in new_items if x not in old_items]
        minus = [f"-{x}" for x in old_items if x not in new_items]
        if plus or minus:
            out.append(f"{ifname} {what} {' '.join(minus + plus)}")
    if old["mtu"] != new["mtu"]:
        out.append(f"{ifname} mtu {old['mtu']} -> {new['mtu']}")
    return out


def _last(ops: list[Op], cls: type[Any], **match: Any) -> Any:
    found = None
    for op in ops:
        if isinstance(op, cls) and all(getattr(op, k) == v for k, v in match.items()):
            found = op
    return found


def plan_reload(profile: Profile, rec: state.Record, facts: Facts) -> ReloadPlan:
    """The reload of REC's namespace to PROFILE; a WgnsError naming what cannot be applied."""
    ns = rec.ns
    refused = _refusals(profile, rec, facts)
    if refused:
        raise WgnsError(
            f"{ns}: --reload cannot apply a change of {', '.join(refused)}; nothing was changed",
            hint=f"wgns down {ns} && wgns up {profile.source}",
        )
    journal = rec.ops()
    result = ReloadPlan(ops=[])
    table = names.nft_table(ns)
    if profile.kill_switch:
        wanted = kill_switch_op(profile, facts, fresh=False)
        if not rec.kill_switch:
            result.ops.append(wanted)
            result.changes.append("kill switch added")
        else:
            old = _last(journal, NftTable, ns=ns, table=table)
            previous = old.ruleset if old is not None else ""
            if _without_replace_prelude(previous) != _without_replace_prelude(wanted.ruleset):
                result.ops.append(
                    ReplaceNftTable(
                        ns=ns,
                        family=wanted.family,
                        table=table,
                        ruleset=wanted.ruleset,
                        previous=previous,
                    )
                )
                result.changes.append("kill switch rules replaced")
    elif rec.kill_switch:
        result.remove_kill_switch = True
    for iface in profile.interfaces:
        ifname = names.wg_ifname(ns, iface.name)
        new = {
            "addresses": [a.with_prefixlen for a in iface.addresses],
            "mtu": facts.mtus[iface.name],
            "routes": routes_for(iface),
        }
        old = _link_state(journal, ifname)
        if old is not None and old != new:
            result.ops.append(ReconfigureLink(ns=ns, ifname=ifname, before=old, after=new))
            result.changes += _link_changes(ifname, old, new)
    files = _last(journal, WriteNetnsFiles, ns=ns)
    if facts.netns_files and (files is None or files.files != facts.netns_files):
        result.ops.append(WriteNetnsFiles(ns=ns, files=dict(facts.netns_files)))
        old_files = files.files if files is not None else {}
        changed = [n for n, text in facts.netns_files.items() if old_files.get(n) != text]
        result.changes.append(f"/etc/netns/{ns}/{{{','.join(changed)}}} rewritten")
    if facts.netns_files and _last(journal, etcview.MountEtcView, ns=ns) is None:
        # up by a wgns without the view: it gets one now
        result.ops.append(etcview.MountEtcView(ns=ns, files=dict(facts.netns_files)))
        result.changes.append(f"/etc view mounted at {etcview.etc_of(ns)}")
    elif facts.netns_files and (files is None or files.files != facts.netns_files):
        result.ops.append(etcview.UpdateEtcView(ns=ns, files=dict(facts.netns_files)))
    result.ops += _container_resolv(journal, facts, result.changes)
    for iface in profile.interfaces:
        ifname = names.wg_ifname(ns, iface.name)
        result.ops.append(
            SyncWireguard(
                ifname=ifname,
                ns=ns,
                backend=rec.backend,
                peers=len(iface.peers),
                config=facts.resolved[iface.name],
            )
        )
    result.changes.append("peers and keys synced")
    if result.remove_kill_switch:
        result.changes.append("kill switch removed")
    return result


def _container_resolv(journal: list[Op], facts: Facts, changes: list[str]) -> list[Op]:
    """A container's own resolv.conf (`up --pid/--container`) rewritten with the new DNS. The new
    op is undone before the first one, which then finds its own text and puts the original back."""
    last = _last(journal, containerdns.ContainerResolvConf)
    wanted = facts.netns_files.get("resolv.conf")
    if last is None or wanted is None or last.content == wanted:
        return []
    changes.append(f"{containerdns.RESOLV_CONF} of process {last.pid} rewritten")
    return [
        containerdns.ContainerResolvConf(pid=last.pid, starttime=last.starttime, content=wanted)
    ]


def reload(profile: Profile, rec: state.Record, facts: Facts) -> tuple[str, ...]:
    """Apply the reload of REC's namespace to PROFILE (REC is up, under its lock); return
    the changes made. On failure, what this reload applied is rolled back."""
    ns = rec.ns
    plan = plan_reload(profile, rec, facts)
    ex = Executor(rec)
    ex.apply_all(plan.ops)
    # down hooks: the profile's now, not the ones recorded at `up` (never run here)
    rec.journal[:] = [e for e in rec.journal if e.get("kind") != DownHook.kind]
    rec.extra.pop("down_hooks", None)  # as records of older versions keep them
    ex.apply_all(down_hooks(profile))
    rec.interfaces = interfaces_json(profile, facts)
    rec.profile = str(profile.source)
    if profile.kill_switch:
        rec.extra["killswitch"] = killswitch.spec_for(profile, facts.openings).to_json()
        rec.kill_switch = True
    rec.ipv6 = ipv6_mode(profile) if profile.kill_switch or not rec.kill_switch else rec.ipv6
    state.save(rec)
    if plan.remove_kill_switch:
        table = names.nft_table(ns)
        errors = ex.undo_where(
            lambda op: isinstance(op, NftTable) and op.ns == ns and op.table == table
        )
        if errors:
            raise WgnsError(
                f"{ns}: reloaded, but the kill switch could not be removed: {'; '.join(errors)}",
                hint=f"`wgns status {ns}`; `wgns down {ns}` removes it",
            )
        rec.kill_switch = False
        rec.extra.pop("killswitch", None)
        rec.ipv6 = ipv6_mode(profile)
        state.save(rec)
    return tuple(plan.changes)
