"""Forwards -> ops (pure): what `wgns up` and `wgns forward add` apply for them.

The ops of one forward, in order: its port claim; for nat, the namespace's veth, its opening in
the kill switch, forwarding towards its remote sources and its DNAT table; its relay when some
sources are served by one (relay mode, or IPv6 sources of a nat forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wgns.engine.ops import Op
from wgns.features import killswitch
from wgns.features.forward import spec
from wgns.features.forward.ops import (
    ForwardDnat,
    ForwardIngress,
    ForwardOpening,
    ForwardPort,
    ForwardRelay,
    ForwardVeth,
)
from wgns.profile.model import Forward


def base_killswitch(ks: killswitch.Spec | dict[str, Any] | None) -> dict[str, Any] | None:
    """The kill switch spec without openings (the ops add the ones of the forwards)."""
    if ks is None:
        return None
    s = killswitch.Spec.from_json(ks) if isinstance(ks, dict) else ks
    return killswitch.Spec(table=s.table, wg_ifnames=s.wg_ifnames, ipv6=s.ipv6).to_json()


def ops_for_forward(
    ns: str,
    f: Forward,
    *,
    allow_host: Sequence[int],
    kill_switch: dict[str, Any] | None,
) -> list[Op]:
    """The ops of forward F of NS. ALLOW_HOST: the profile's (the veth's filter lists it);
    KILL_SWITCH: NS's kill switch spec without openings (None: NS has none)."""
    fj = spec.to_json(f)
    ops: list[Op] = [ForwardPort(ns=ns, forward=fj)]
    if spec.nat_sources(f):
        ops.append(ForwardVeth(ns=ns, forward=fj, allow_host=list(allow_host)))
        if kill_switch is not None:
            ops.append(ForwardOpening(ns=ns, forward=fj, killswitch=kill_switch))
        if spec.remote_sources(f):
            ops.append(ForwardIngress(ns=ns, forward=fj))
        ops.append(ForwardDnat(ns=ns, forward=fj))
    if spec.relay_sources(f):
        ops.append(ForwardRelay(ns=ns, forward=fj))
    return ops


def ops_for_profile(
    ns: str,
    forwards: Sequence[Forward],
    allow_host: Sequence[int],
    kill_switch: killswitch.Spec | None,
) -> list[Op]:
    """The ops of `wgns up` for a profile's [[forward]]s and allow_host (after the tunnel)."""
    ks = base_killswitch(kill_switch)
    ops: list[Op] = []
    if allow_host:
        ops.append(ForwardVeth(ns=ns, allow_host=list(allow_host)))
        if ks is not None:
            ops.append(ForwardOpening(ns=ns, allow_host=list(allow_host), killswitch=ks))
    for f in forwards:
        ops += ops_for_forward(ns, f, allow_host=allow_host, kill_switch=ks)
    return ops
