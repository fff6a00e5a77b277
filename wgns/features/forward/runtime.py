"""`wgns forward add|remove|list` on a namespace that is up, and relay repair.

A change is the ops of one forward, under the namespace's lock: `add` applies them with the one
executor (a failure rolls back exactly those), `remove` undoes exactly those. The record's
journal is the only list of forwards.
"""

from __future__ import annotations

from typing import Any

from wgns.engine import state
from wgns.engine.executor import Executor
from wgns.errors import WgnsError
from wgns.features import killswitch
from wgns.features.forward import plan, spec
from wgns.features.forward.ops import (
    ForwardOpening,
    ForwardPort,
    ForwardRelay,
    ForwardVeth,
    serves,
    veth_addresses,
)
from wgns.profile.model import Forward, Proto
from wgns.system import netns


def _require_up(ns: str) -> state.Record:
    rec = state.load(ns)
    if rec is None or rec.phase != "up":
        raise WgnsError(f"{ns} is not up", hint=f"wgns up PROFILE --name {ns}")
    if not netns.exists(ns):
        raise WgnsError(f"namespace {ns} is missing", hint=f"wgns down {ns}")
    return rec


def forwards_of(rec: state.Record) -> list[Forward]:
    return [spec.from_json(op.forward) for op in rec.find(ForwardPort) if op.ns == rec.ns]


def _kill_switch_of(rec: state.Record) -> dict[str, Any] | None:
    if not rec.kill_switch:
        return None
    raw = rec.extra.get("killswitch")
    if not isinstance(raw, dict):
        raise WgnsError(
            f"the state record of {rec.ns} has no kill switch spec", hint=f"wgns down {rec.ns}"
        )
    return plan.base_killswitch(raw)


def _allow_host_of(rec: state.Record) -> list[int]:
    for op in rec.find(ForwardVeth):
        return list(op.allow_host)
    return []


def _note_change(rec: state.Record) -> None:
    """Keep the record's summaries in step with the journal: the forwards, and the kill switch
    `wgns check` expects (its openings are those of the journaled ForwardOpenings)."""
    rec.extra["forwards"] = [spec.to_json(f) for f in forwards_of(rec)]
    raw = rec.extra.get("killswitch")
    if rec.kill_switch and isinstance(raw, dict):
        opening_ops = rec.find(ForwardOpening)
        fwds = [spec.from_json(op.forward) for op in opening_ops if op.forward is not None]
        allow = sorted({p for op in opening_ops for p in op.allow_host})
        base = killswitch.Spec.from_json(raw)
        rec.extra["killswitch"] = killswitch.Spec(
            table=base.table,
            wg_ifnames=base.wg_ifnames,
            ipv6=base.ipv6,
            openings=spec.openings(rec.ns, fwds, allow),
        ).to_json()
    state.save(rec)


def _relay_of(rec: state.Record, key: str) -> ForwardRelay | None:
    for op in rec.find(ForwardRelay):
        if serves(op, rec.ns, key):
            return op
    return None


def add(ns: str, fwd: Forward) -> str:
    """Publish FWD of NS; returns what was done, for the user. Adding a forward that exists
    with a dead relay restarts that relay (and nothing else)."""
    netns.validate_name(ns)
    _require_up(ns)  # before the lock: a namespace that is not up gets no lock file
    key = spec.key_of(fwd)
    with state.locked(ns):
        rec = _require_up(ns)
        for existing in forwards_of(rec):
            if spec.key_of(existing) != key:
                continue
            relay = _relay_of(rec, key)
            if existing == fwd and relay is not None and not relay.alive():
                return _restart_relay(rec, relay)
            raise WgnsError(
                f"{fwd.proto.value} port {fwd.host_port} is already published by {ns}",
                hint=f"wgns forward remove {ns} {fwd.host_port} first",
            )
        ops = plan.ops_for_forward(
            ns, fwd, allow_host=_allow_host_of(rec), kill_switch=_kill_switch_of(rec)
        )
        Executor(rec).apply_all(ops)
        _note_change(rec)
    return "published"


def _restart_relay(rec: state.Record, relay: ForwardRelay) -> str:
    f = spec.from_json(relay.forward)
    key = spec.key_of(f)
    ex = Executor(rec)
    errors = ex.undo_where(lambda op: isinstance(op, ForwardRelay) and serves(op, rec.ns, key))
    if errors:
        raise WgnsError(f"cannot clear the dead relay of {key}: {'; '.join(errors)}")
    fresh = ForwardRelay(ns=rec.ns, forward=relay.forward)
    Executor(rec).apply_all([fresh])
    _note_change(rec)
    got = _relay_of(rec, key)
    pid = got.result.get("pid") if got is not None else "?"
    return f"relay restarted (it was dead; pid {pid}, log {relay.result.get('log')})"


def repair(ns: str) -> list[str]:
    """Restart every dead relay of NS (for a watchdog); what was done, one line each."""
    done: list[str] = []
    with state.locked(ns):
        rec = _require_up(ns)
        for relay in rec.find(ForwardRelay):
            if relay.ns == ns and not relay.alive():
                done.append(_restart_relay(rec, relay))
    return done


def remove(ns: str, host_port: int, proto: Proto) -> None:
    netns.validate_name(ns)
    _require_up(ns)  # before the lock: a namespace that is not up gets no lock file
    key = f"{proto.value}/{host_port}"
    with state.locked(ns):
        rec = _require_up(ns)
        if not any(spec.key_of(f) == key for f in forwards_of(rec)):
            raise WgnsError(f"{ns} publishes no {proto.value} port {host_port}")
        errors = Executor(rec).undo_where(lambda op: serves(op, ns, key))
        _note_change(rec)
        if errors:
            raise WgnsError(f"removing {key} of {ns}: {'; '.join(errors)}")


def listing(ns: str | None) -> list[dict[str, Any]]:
    """Every forward of NS (or of every managed namespace), with where it is served."""
    spaces = [ns] if ns is not None else state.managed()
    out: list[dict[str, Any]] = []
    for name in spaces:
        rec = state.load(name)
        if rec is None:
            if ns is not None:
                raise WgnsError(f"{name} is not managed by wgns")
            continue
        out += rows_of(name, rec)
    return out


def rows_of(name: str, rec: state.Record) -> list[dict[str, Any]]:
    """The forwards of namespace NAME (its record REC), one row each, with where it is served."""
    fwds = forwards_of(rec)
    if not fwds:
        return []
    veth = veth_addresses(name) if netns.exists(name) else None
    out: list[dict[str, Any]] = []
    for f in fwds:
        relay = _relay_of(rec, spec.key_of(f))
        row: dict[str, Any] = {
            "ns": name,
            **spec.to_json(f),
            "nat_target": f"{veth[1]}:{f.ns_port}" if veth and spec.nat_sources(f) else None,
            "veth": {"host": veth[0], "ns": veth[1]} if veth else None,
            "relay": None,
        }
        if relay is not None:
            row["relay"] = {
                "pid": relay.result.get("pid"),
                "alive": relay.alive(),
                "log": relay.result.get("log"),
            }
        out.append(row)
    return out
