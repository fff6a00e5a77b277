"""The plan of `up --reload`, pure: a record made from `up`'s plan (as the executor journals
it), a changed profile, and the ops the reload would apply, in their safe order."""

from __future__ import annotations

from dataclasses import replace as dc_replace
from ipaddress import ip_network
from typing import Any

import pytest

from tests.lifecycle.test_plan import NS, PRIVATE, PSK, _facts, _iface, _shape
from wgns.engine.ops import NftTable, WriteNetnsFiles
from wgns.engine.plan import render
from wgns.engine.state import Record
from wgns.errors import WgnsError
from wgns.lifecycle.ops import ReconfigureLink, ReplaceNftTable, SyncWireguard
from wgns.lifecycle.plan import Facts, plan_up
from wgns.lifecycle.reload import plan_reload
from wgns.profile.model import Interface, Profile


def _replace(obj: Any, **kw: Any) -> Any:
    return dc_replace(obj, **kw)


def _record(profile: Profile, facts: Facts) -> Record:
    ops = plan_up(profile, facts)
    return Record(
        ns=NS,
        backend=facts.backend,
        phase="up",
        interfaces=[{"label": i.name} for i in profile.interfaces],
        kill_switch=profile.kill_switch,
        journal=[op.to_json() for op in ops],
    )


def _setup(*, kill_switch: bool = True) -> tuple[Profile, Facts, Record]:
    profile = _shape(two=False, ipv6=False, kill_switch=kill_switch, hooks=False, forwards=False)
    facts = _facts(profile, backend="userspace", ns_exists=False)
    return profile, facts, _record(profile, facts)


def _with_allowed(profile: Profile, *nets: str) -> Profile:
    (iface,) = profile.interfaces
    (peer,) = iface.peers
    peer = _replace(peer, allowed_ips=tuple(ip_network(n) for n in nets))
    new: Interface = _replace(iface, peers=(peer,))
    return _replace(profile, interfaces=(new,))


def test_an_unchanged_profile_only_syncs_peers() -> None:
    profile, facts, rec = _setup()
    plan = plan_reload(profile, rec, facts)
    assert [type(op) for op in plan.ops] == [SyncWireguard]
    assert not plan.remove_kill_switch


def test_narrowing_removes_the_default_route_before_adding_the_new_ones() -> None:
    profile, facts, rec = _setup()
    narrowed = _with_allowed(profile, "198.18.2.0/24")
    plan = plan_reload(narrowed, rec, facts)
    (link,) = [op for op in plan.ops if isinstance(op, ReconfigureLink)]
    lines = link.lines(link.before, link.after)
    assert lines[0].startswith("route del 0.0.0.0/0 dev ")
    assert lines[-1].startswith("route replace 198.18.2.0/24 dev ")
    assert link.lines(link.after, link.before)[0].startswith("route del 198.18.2.0/24")
    assert isinstance(plan.ops[-1], SyncWireguard)  # the peers last: it cannot be undone


def test_kill_switch_on_comes_first_and_off_is_removed_after() -> None:
    profile, facts, rec = _setup(kill_switch=False)
    on = _replace(_with_allowed(profile, "198.18.2.0/24"), kill_switch=True)
    plan = plan_reload(on, rec, _facts(on, backend="userspace", ns_exists=True))
    assert isinstance(plan.ops[0], NftTable) and "delete table" in plan.ops[0].ruleset
    assert "kill switch added" in plan.changes

    profile, facts, rec = _setup(kill_switch=True)
    off = _replace(profile, kill_switch=False)
    plan = plan_reload(off, rec, facts)
    assert plan.remove_kill_switch and not any(isinstance(op, NftTable) for op in plan.ops)


def test_changed_rules_replace_the_table_restorably_and_dns_is_rewritten() -> None:
    _, _, rec = _setup()
    v6 = _shape(two=False, ipv6=True, kill_switch=True, hooks=False, forwards=False)
    new_facts = _replace(_facts(v6, backend="userspace", ns_exists=True), netns_files={"a": "b"})
    plan = plan_reload(v6, rec, new_facts)
    (table,) = [op for op in plan.ops if isinstance(op, NftTable)]
    assert isinstance(table, ReplaceNftTable) and table is plan.ops[0]
    assert table.previous == rec.find(NftTable)[0].ruleset
    assert any(isinstance(op, WriteNetnsFiles) and op.files == {"a": "b"} for op in plan.ops)
    text = "\n".join(render(plan.ops))
    assert PRIVATE not in text and PSK not in text


@pytest.mark.parametrize("what", ["interfaces", "birthplace", "backend", "forwards"])
def test_what_cannot_be_applied_is_refused_by_name(what: str) -> None:
    profile, facts, rec = _setup()
    if what == "interfaces":
        profile = _replace(
            profile, interfaces=(*profile.interfaces, _iface("wg1", 1, ipv6=False, hooks=False))
        )
        facts = _facts(profile, backend="userspace", ns_exists=True)
    elif what == "birthplace":
        profile = _replace(profile, birthplace="elsewhere")
    elif what == "backend":
        facts = _replace(facts, backend="kernel")
    else:
        with_fwd = _shape(two=False, ipv6=False, kill_switch=True, hooks=False, forwards=True)
        profile, facts = with_fwd, _facts(with_fwd, backend="userspace", ns_exists=True)
    with pytest.raises(WgnsError, match=what) as e:
        plan_reload(profile, rec, facts)
    assert "nothing was changed" in str(e.value)
