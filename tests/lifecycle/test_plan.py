"""The order of `up`'s plan, for every profile shape: pure (Facts built by hand, no I/O).

The safety of `up` is its order: the kill switch is in place before the first address, route or
link up in the namespace; forwards come once the tunnel is up; hooks run where wg-quick runs
them (PreUp before the interface exists, PostUp once it is up, PreDown/PostDown journaled as
data for `down`). And the plan is data: it renders and journals without a secret.
"""

from __future__ import annotations

import itertools
from ipaddress import ip_interface, ip_network

import pytest

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
from wgns.engine.plan import render
from wgns.features.etcview import MountEtcView
from wgns.features.forward import spec as forward_spec
from wgns.lifecycle.ops import DownHook
from wgns.lifecycle.plan import Facts, plan_up, routes_for
from wgns.profile.model import (
    Endpoint,
    Forward,
    Hook,
    HookWhen,
    Interface,
    Peer,
    Profile,
    Secret,
)
from wgns.system import names

NS = "vpn"
PRIVATE = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PSK = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def _iface(label: str, n: int, *, ipv6: bool, hooks: bool) -> Interface:
    addrs = [ip_interface(f"10.{n}.0.2/32")]
    allowed = [ip_network("0.0.0.0/0") if n == 0 else ip_network(f"198.19.{n}.0/24")]
    if ipv6:
        addrs.append(ip_interface(f"2001:db8:{n}::2/128"))
        allowed.append(ip_network("::/0") if n == 0 else ip_network(f"2001:db8:ff{n}::/64"))
    peer = Peer(
        public_key=PEER,
        preshared_key=Secret(PSK),
        allowed_ips=tuple(allowed),
        endpoint=Endpoint("198.18.0.1", 51820 + n),
    )
    hook_list = (
        (
            Hook(when=HookWhen.PRE_UP, command=f"echo pre-up {label} %i"),
            Hook(when=HookWhen.POST_UP, command=f"echo post-up {label} %i"),
            Hook(when=HookWhen.PRE_DOWN, command=f"echo pre-down {label} %i"),
            Hook(when=HookWhen.POST_DOWN, command=f"echo post-down {label} %i"),
        )
        if hooks
        else ()
    )
    return Interface(
        name=label,
        private_key=Secret(PRIVATE),
        addresses=tuple(addrs),
        peers=(peer,),
        hooks=hook_list,
    )


def _shape(*, two: bool, ipv6: bool, kill_switch: bool, hooks: bool, forwards: bool) -> Profile:
    ifaces = [_iface("wg0", 0, ipv6=ipv6, hooks=hooks)]
    if two:
        ifaces.append(_iface("wg1", 1, ipv6=ipv6, hooks=hooks))
    fwd = (Forward(host_port=9000, ns_port=8000),) if forwards else ()
    return Profile(
        name=NS,
        source="/tmp/vpn.toml",
        interfaces=tuple(ifaces),
        kill_switch=kill_switch,
        forwards=fwd,
        allow_host=(5432,) if forwards else (),
    )


def _facts(profile: Profile, *, backend: str, ns_exists: bool) -> Facts:
    openings = forward_spec.openings(NS, profile.forwards, profile.allow_host)
    return Facts(
        ns_exists=ns_exists,
        backend=backend,
        mtus={i.name: 1420 for i in profile.interfaces},
        resolved={i.name: i for i in profile.interfaces},
        netns_files={"resolv.conf": "nameserver 10.0.0.1\n"},
        openings=openings,
    )


SHAPES = list(itertools.product((False, True), repeat=7))


def _id(shape: tuple[bool, ...]) -> str:
    keys = ("kernel", "exists", "ks", "two", "v6", "hooks", "fwd")
    return "-".join(k for k, on in zip(keys, shape, strict=True) if on) or "plain"


def _is_forward(op: Op) -> bool:
    return type(op).__module__.startswith("wgns.features.forward")


def _first(ops: list[Op], pred: object) -> int:
    return next(i for i, op in enumerate(ops) if pred(op))  # type: ignore[operator]


@pytest.mark.parametrize("shape", SHAPES, ids=[_id(s) for s in SHAPES])
def test_the_plan_order_is_safe_for_every_shape(shape: tuple[bool, ...]) -> None:
    kernel, exists, ks, two, ipv6, hooks, fwd = shape
    profile = _shape(two=two, ipv6=ipv6, kill_switch=ks, hooks=hooks, forwards=fwd)
    facts = _facts(profile, backend="kernel" if kernel else "userspace", ns_exists=exists)
    ops = plan_up(profile, facts)
    ifnames = [names.wg_ifname(NS, i.name) for i in profile.interfaces]

    # the namespace: created iff it did not exist, before anything is put into it
    adds = [i for i, op in enumerate(ops) if isinstance(op, AddNetns)]
    inside = [
        i
        for i, op in enumerate(ops)
        if isinstance(op, NftTable | WriteNetnsFiles | MoveLink | ConfigureLink | LinkUp)
    ]
    if exists:
        assert adds == []
    else:
        assert len(adds) == 1 and adds[0] < min(inside)
    if kernel:
        assert not any(isinstance(op, CreateWireguard) and op.target != NS for op in ops)

    # the /etc view (what confined units bind over /etc): mounted right after the /etc/netns
    # files are written, with the same files, once
    writes = [i for i, op in enumerate(ops) if isinstance(op, WriteNetnsFiles)]
    views = [i for i, op in enumerate(ops) if isinstance(op, MountEtcView)]
    assert len(writes) == 1 and views == [writes[0] + 1]
    assert ops[views[0]].files == facts.netns_files  # type: ignore[attr-defined]

    # the kill switch before the first address, route or link up
    carriers = [i for i, op in enumerate(ops) if isinstance(op, ConfigureLink | LinkUp)]
    tables = [i for i, op in enumerate(ops) if isinstance(op, NftTable)]
    if ks:
        assert len(tables) == 1 and tables[0] < min(carriers)
        assert set(ifnames) <= set(ops[tables[0]].ruleset.split('"'))  # type: ignore[attr-defined]
    else:
        assert tables == []
    # lo: up with the first link in a namespace wgns made, restorably in one it did not
    links = [op for op in ops if isinstance(op, ConfigureLink)]
    assert [op.lo_up for op in links] == [not exists] + [False] * (len(links) - 1)
    assert any(isinstance(op, LinkUp) and op.ifname == "lo" for op in ops) == exists

    # each interface: created, (moved,) configured, then its link; in the namespace
    for iface, ifname in zip(profile.interfaces, ifnames, strict=True):
        create = _first(
            ops, lambda op, n=ifname: isinstance(op, CreateWireguard) and op.ifname == n
        )
        config = _first(
            ops, lambda op, n=ifname: isinstance(op, ConfigureWireguard) and op.ifname == n
        )
        link = _first(ops, lambda op, n=ifname: isinstance(op, ConfigureLink) and op.ifname == n)
        moves = [i for i, op in enumerate(ops) if isinstance(op, MoveLink) and op.ifname == ifname]
        assert create < config < link
        if kernel:
            assert moves == []
        else:
            assert len(moves) == 1 and create < moves[0] < link
        assert ops[link].routes == routes_for(iface)  # type: ignore[attr-defined]
        assert ops[link].mtu == 1420  # type: ignore[attr-defined]
        # wg-quick: PreUp before the interface exists, PostUp once it is up
        if hooks:
            pre = _first(
                ops,
                lambda op, n=ifname: (
                    isinstance(op, RunHook) and op.when == "pre-up" and op.ifname == n
                ),
            )
            post = _first(
                ops,
                lambda op, n=ifname: (
                    isinstance(op, RunHook) and op.when == "post-up" and op.ifname == n
                ),
            )
            assert pre < create and post > max(carriers)

    # forwards once the tunnel is up (after the last link), before PostUp hooks
    fwds = [i for i, op in enumerate(ops) if _is_forward(op)]
    assert bool(fwds) == fwd
    if fwds:
        assert min(fwds) > max(carriers)
        posts = [i for i, op in enumerate(ops) if isinstance(op, RunHook) and op.when == "post-up"]
        assert not posts or max(fwds) < min(posts)

    # PreDown/PostDown: data for `down`, never run at `up`
    downs = [op for op in ops if isinstance(op, DownHook)]
    assert not any(isinstance(op, RunHook) and "down" in op.when for op in ops)
    if hooks:
        assert {(op.when, op.ifname) for op in downs} == {
            (w, n) for w in ("pre-down", "post-down") for n in ifnames
        }
        assert ops[-len(downs) :] == downs
    else:
        assert downs == []

    # the plan is data: it renders and journals without a secret, and reads back
    text = "\n".join(render(ops))
    assert len(render(ops)) == len(ops)
    for op in ops:
        entry = op.to_json()
        assert PRIVATE not in repr(entry) and PSK not in repr(entry)
        assert Op.from_json(entry).to_json() == entry
    assert PRIVATE not in text and PSK not in text


def test_the_plain_userspace_plan_in_full() -> None:
    """One shape spelt out: the daemon starts first, the kill switch is loaded during the move."""
    profile = _shape(two=False, ipv6=True, kill_switch=True, hooks=False, forwards=False)
    ops = plan_up(profile, _facts(profile, backend="userspace", ns_exists=False))
    assert [type(op) for op in ops] == [
        CreateWireguard,
        AddNetns,
        WriteNetnsFiles,
        MountEtcView,
        MoveLink,
        NftTable,
        ConfigureWireguard,
        ConfigureLink,
    ]
    link = ops[-1]
    assert isinstance(link, ConfigureLink)
    assert link.routes == [["0.0.0.0/0", None], ["::/0", None]]
    assert isinstance(ops[5], NftTable) and "delete table" not in ops[5].ruleset


def test_table_off_has_no_routes_and_a_table_number_is_kept() -> None:
    peers = _iface("wg0", 0, ipv6=False, hooks=False).peers
    key = Secret(PRIVATE)
    assert routes_for(Interface(name="a", private_key=key, peers=peers, table="off")) == []
    numbered = Interface(name="a", private_key=key, peers=peers, table="1234")
    assert routes_for(numbered) == [["0.0.0.0/0", 1234]]
