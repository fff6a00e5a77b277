"""`up`: validate, plan, execute, record; and of a namespace already up: nothing, a repair of
what is broken, or (`--reload`) the plan of wgns.lifecycle.reload."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from wgns import log
from wgns.engine import state
from wgns.engine.executor import Executor, undo_journal
from wgns.engine.ops import Op
from wgns.errors import ConfigError, WgnsError
from wgns.features import killswitch
from wgns.lifecycle import probe
from wgns.lifecycle.plan import (
    TUNNEL_OPS,
    Facts,
    create_op,
    forwards_json,
    interfaces_json,
    ipv6_mode,
    plan_up,
    tunnel_ops,
)
from wgns.profile import load as profile_load
from wgns.profile.model import Profile
from wgns.system import names, netns
from wgns.wireguard import backends

if TYPE_CHECKING:
    from wgns.features.container import Target


@dataclass(frozen=True)
class UpResult:
    """What `up` did: OUTCOME is "up", "already up", "repaired" or "reloaded"; NOTES say what
    was broken (repaired) or what changed (reloaded)."""

    ns: str
    outcome: str
    backend: str
    ifnames: tuple[str, ...]
    notes: tuple[str, ...] = ()


class Terminated(BaseException):
    """SIGTERM/SIGHUP during `up`: roll back like Ctrl-C does."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def _rollback_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated in the block, so that the executor rolls back."""
    old = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def netns_files(profile: Profile) -> dict[str, str]:
    from wgns.features.dns import dns_files

    return dns_files(profile.dns, profile.dns_search, profile.name)


def gather_facts(
    profile: Profile,
    target: Target | None = None,
    *,
    inherited: str | None = None,
    replacing: bool = False,
) -> Facts:
    """Everything `up` needs to know, read-only: a profile that cannot work fails here.
    TARGET: the process whose namespace gets the tunnel (--pid, --container); INHERITED: the
    container's original resolv.conf a stale record of the name saved; REPLACING: that record
    is cleared first (its name too)."""
    if profile.birthplace is not None and not netns.exists(profile.birthplace):
        raise ConfigError(
            f"birthplace namespace {profile.birthplace!r} does not exist",
            path=profile.source,
            key="birthplace",
        )
    chosen = backends.select(profile.backend).name
    resolved = [probe.resolve_endpoints(i, where=profile.birthplace) for i in profile.interfaces]
    openings: tuple[killswitch.Opening, ...] = ()
    if profile.forwards or profile.allow_host:
        from wgns.features.forward import spec as forward

        openings = forward.openings(profile.name, profile.forwards, profile.allow_host)
    files = netns_files(profile)
    placed = None
    if target is not None:
        from wgns.features import container

        placed = container.placement(
            profile, target, files["resolv.conf"], inherited=inherited, replacing=replacing
        )
    return Facts(
        ns_exists=placed is not None or netns.exists(profile.name),
        backend=chosen,
        mtus=probe.mtus_for(resolved, where=profile.birthplace),
        resolved={i.name: i for i in resolved},
        netns_files=files,
        openings=openings,
        container=placed,
    )


def _new_record(profile: Profile, facts: Facts) -> state.Record:
    extra: dict[str, object] = {
        "nft_table": names.nft_table(profile.name),
        "forwards": forwards_json(profile),
        "allow_host": list(profile.allow_host),
    }
    if profile.kill_switch:  # what `wgns check` renders the expected kill switch table from
        extra["killswitch"] = killswitch.spec_for(profile, facts.openings).to_json()
    if facts.container is not None:  # checked at every command (wgns.features.container)
        extra["container"] = facts.container.to_json()
    return state.Record(
        ns=profile.name,
        created_ns=not facts.ns_exists,
        profile=str(profile.source),
        backend=facts.backend,
        phase="starting",
        birthplace=profile.birthplace,
        birthplace_inode=netns.inode_of(profile.birthplace),
        interfaces=interfaces_json(profile, facts),
        ipv6=ipv6_mode(profile),
        kill_switch=profile.kill_switch,
        extra=extra,
    )


def _warn(profile: Profile) -> None:
    if not profile.kill_switch:
        log.warning(
            "wgns: WARNING: kill switch disabled for %s: if the tunnel fails, traffic leaves "
            "without it",
            profile.name,
        )
    for iface in profile.interfaces:
        if iface.save_config:  # wg-quick would rewrite the file at `down`: say that we will not
            log.warning(
                "wgns: %s: SaveConfig = true is ignored: wgns never writes the profile back "
                "(`wg showconf` inside the namespace shows the running configuration)",
                iface.name,
            )


def _refuse_leftovers(profile: Profile) -> None:
    found = probe.leftovers(profile)
    if found:
        ns = profile.name
        raise WgnsError(
            f"{ns} has no wgns record ({state.path_of(ns)}) but what its `up` would create "
            f"exists already (a tunnel whose record was removed by hand?): {'; '.join(found)}",
            hint="remove those (the commands above), then run `wgns up` again",
        )


def _target(rec: state.Record | None, target: Target | None, ns: str) -> Target | None:
    if target is None and (rec is None or "container" not in rec.extra):
        return None
    from wgns.features import container

    return container.check_reuse(rec, target, ns)


def _inherited(rec: state.Record) -> str | None:
    if "container" not in rec.extra:
        return None
    from wgns.features import containerdns

    try:
        return containerdns.inherited_prior(rec.ops())
    except WgnsError:
        return None


def _refuse_physical(rec: state.Record | None) -> None:
    """REC is physical mode's (wgns.lifecycle.physical): its tunnel lives in the main namespace,
    which `up` would take for a broken one and "repair"."""
    if rec is not None and rec.extra.get("kind") == "physical":
        raise WgnsError(
            f"{rec.ns} is physical mode's namespace, not one `wgns up` manages",
            hint=f"wgns physical status; wgns physical down --name {rec.ns}",
        )


def apply_fresh(record: state.Record, ops: list[Op], lock: state.Lock) -> None:
    """Apply OPS, journaled in the new RECORD, rolled back on a failure or a SIGTERM/SIGINT;
    what the rollback could not undo stays journaled for `down`, and with nothing left /run/wgns
    is as it was. Then phase "up", saved. The caller holds LOCK, the namespace's."""
    with _rollback_on_signals():
        try:
            Executor(record).apply_all(ops)
        except BaseException:
            if record.journal:  # what the rollback could not undo: `down` tries again
                state.save(record)
            else:
                state.remove(record.ns)
                lock.release_files = True  # leave /run/wgns as it was before this `up`
            raise
        record.phase = "up"
        state.save(record)


def plan(
    profile: Profile, *, reload: bool = False, target: Target | None = None
) -> tuple[str, list[Op]]:
    """What `up` (RELOAD: `up --reload`) of PROFILE would do, read-only: (the outcome it would
    have, its ops). The namespace broken: the plan of a fresh `up` after clearing its remains.
    TARGET: the process whose namespace gets the tunnel (--pid, --container)."""
    from wgns.lifecycle import reload as reloading

    rec = state.load(profile.name)
    _refuse_physical(rec)
    target = _target(rec, target, profile.name)
    if rec is not None and rec.phase == "up":
        gone, problems = probe.broken(rec)
        if problems and not gone:
            ops = repair_ops(profile, gather_facts(profile), probe.broken_ifnames(rec))
            return "repaired", ops + view_repair_ops(rec)
        if problems:
            facts = gather_facts(profile, target, inherited=_inherited(rec), replacing=True)
            return "repaired", plan_up(profile, facts)
        if not reload:
            return "already up", []
        return "reloaded", reloading.plan_reload(profile, rec, gather_facts(profile)).ops
    if rec is None:
        _refuse_leftovers(profile)
    return "up", plan_up(profile, gather_facts(profile, target))


def up(profile: Profile, *, reload: bool = False, target: Target | None = None) -> UpResult:
    result = _up(profile, reload=reload, target=target)
    from wgns.features import statusfile

    statusfile.refresh(result.ns)  # the status bars' copy (docs/status.md); never raises
    return result


def _up(profile: Profile, *, reload: bool, target: Target | None) -> UpResult:
    ns = profile.name
    ifnames = tuple(names.wg_ifname(ns, i.name) for i in profile.interfaces)
    _warn(profile)
    with state.locked(ns) as lock:
        rec = state.load(ns)
        _refuse_physical(rec)
        target = _target(rec, target, ns)
        inherited = None
        notes: tuple[str, ...] = ()
        if rec is not None and rec.phase == "up":
            gone, problems = probe.broken(rec)
            if not problems:
                if not reload:
                    return UpResult(ns, "already up", rec.backend, _recorded_ifnames(rec))
                from wgns.lifecycle import reload as reloading

                changes = reloading.reload(profile, rec, gather_facts(profile))
                return UpResult(ns, "reloaded", rec.backend, _recorded_ifnames(rec), changes)
            notes = tuple(problems)
            bp = rec.birthplace
            if not gone and bp is not None and not netns.exists(bp):
                raise WgnsError(
                    f"{ns} is broken: its birthplace {bp} is gone, and with it the UDP socket of "
                    f"its tunnel; it cannot be repaired while {bp} does not exist",
                    hint=f"bring {bp} back, then `wgns up` {ns} again (it repairs); or "
                    f"`wgns down {ns}`",
                )
            if not gone:
                broken = probe.broken_ifnames(rec)
                if broken:
                    repair_tunnels(profile, rec, broken)
                repair_view(rec)
                if reload:
                    from wgns.lifecycle import reload as reloading

                    notes += reloading.reload(profile, rec, gather_facts(profile))
                return UpResult(ns, "repaired", rec.backend, _recorded_ifnames(rec), notes)
            # the namespace was deleted: nothing inside can be alive; clear and start again
        if rec is not None and target is not None:  # the new namespace checked before the old goes
            from wgns.features import container

            container.validate(profile, target, replacing=True)
        if rec is not None:
            what = "its remains" if notes else "an interrupted run"
            log.info("wgns: %s: cleaning up %s", ns, what)
            inherited = _inherited(rec)
            errors = undo_journal(rec)
            if errors:
                raise WgnsError(
                    f"cannot clean up what is left of {ns}: {'; '.join(errors)}",
                    hint=f"fix that, then `wgns down {ns}`",
                )
            state.remove(ns)
        else:
            _refuse_leftovers(profile)
        try:
            facts = gather_facts(profile, target, inherited=inherited)
        except BaseException:
            lock.release_files = True
            raise
        record = _new_record(profile, facts)
        apply_fresh(record, plan_up(profile, facts), lock)
    return UpResult(ns, "repaired" if notes else "up", facts.backend, ifnames, notes)


def _recorded_ifnames(rec: state.Record) -> tuple[str, ...]:
    return tuple(str(i["ifname"]) for i in rec.interfaces)


def repair_tunnels(profile: Profile, rec: state.Record, broken: list[str]) -> None:
    """Remake the wg interfaces BROKEN (daemon dead, device deleted) of REC's namespace, in
    place: the namespace, its kill switch (which names the interfaces, so it holds the new
    ones too), its files and the processes inside stay."""
    ns = rec.ns
    by_ifname = {names.wg_ifname(ns, i.name): i for i in profile.interfaces}
    missing = [i for i in broken if i not in by_ifname]
    if missing:
        raise WgnsError(
            f"{ns} is broken ({', '.join(missing)}) and the profile has no such interface",
            hint=f"wgns down {ns} && wgns up {profile.source}",
        )
    facts = gather_facts(profile)  # before any change: a profile that cannot work stops here
    if facts.backend != rec.backend or profile.birthplace != rec.birthplace:
        raise WgnsError(
            f"{ns} is broken and its profile changed backend or birthplace: it is not repaired",
            hint=f"wgns down {ns} && wgns up {profile.source}",
        )
    from wgns.lifecycle.ops import ReconfigureLink, SyncWireguard

    ex = Executor(rec)
    remakes = (*TUNNEL_OPS, ReconfigureLink, SyncWireguard)
    errors = ex.undo_where(
        lambda op: isinstance(op, remakes) and getattr(op, "ifname", None) in broken
    )
    if errors:
        raise WgnsError(
            f"cannot clear the broken tunnel of {ns}: {'; '.join(errors)}",
            hint=f"wgns down {ns} && wgns up {profile.source}",
        )
    ops = repair_ops(profile, facts, broken)
    with _rollback_on_signals():
        ex.apply_all(ops)
    for entry in rec.interfaces:
        if entry["ifname"] in broken:
            iface = by_ifname[entry["ifname"]]
            entry["addresses"] = [a.with_prefixlen for a in iface.addresses]
            entry["mtu"] = facts.mtus[iface.name]
    rec.birthplace_inode = netns.inode_of(rec.birthplace)  # a replaced birthplace: the new one
    state.save(rec)


def view_repair_ops(rec: state.Record) -> list[Op]:
    """The /etc view of REC's namespace mounted again, when it is journaled but not mounted
    (unmounted by hand): with the files /etc/netns/NS has now."""
    if not probe.view_missing(rec):
        return []
    from wgns.engine.ops import WriteNetnsFiles
    from wgns.features.etcview import MountEtcView

    written = [op for op in rec.find(WriteNetnsFiles) if op.ns == rec.ns]
    return [MountEtcView(ns=rec.ns, files=dict(written[-1].files))] if written else []


def repair_view(rec: state.Record) -> None:
    """Mount REC's /etc view again if it went missing; what was journaled of it is undone
    first (its directories and copies), so that the journal holds one view."""
    ops = view_repair_ops(rec)
    if not ops:
        return
    from wgns.features.etcview import MountEtcView, UpdateEtcView

    ex = Executor(rec)
    errors = ex.undo_where(
        lambda op: isinstance(op, MountEtcView | UpdateEtcView) and op.ns == rec.ns
    )
    if errors:
        raise WgnsError(
            f"cannot clear the broken /etc view of {rec.ns}: {'; '.join(errors)}",
            hint=f"wgns down {rec.ns}, then `wgns up` again",
        )
    with _rollback_on_signals():
        ex.apply_all(ops)
    state.save(rec)


def repair_ops(profile: Profile, facts: Facts, broken: list[str]) -> list[Op]:
    """The ops remaking the interfaces BROKEN of PROFILE's namespace (which exists)."""
    ops: list[Op] = []
    for iface in profile.interfaces:
        if names.wg_ifname(profile.name, iface.name) in broken:
            ops.append(create_op(profile, facts, iface))
            ops.extend(tunnel_ops(profile, facts, iface, fresh=False))
    return ops


def load(ref: str, *, name: str | None, backend: str | None) -> Profile:
    return profile_load.load_profile(ref, name=name, backend=backend)
