"""`down`: undo exactly what the state record says wgns did, best effort, idempotent.

Order (wg-quick's): the PreDown hooks, then the rest of the journal in reverse, then the
PostDown hooks. A failing hook is reported and does not stop the teardown, nor is it run again
by a later `down`: hooks are run once. A teardown error keeps the record (at "stopping"), so
that `down` can be run again once it is fixed.

A namespace that is the birthplace of another one wgns manages is refused, naming that one:
its tunnel's packets leave through this namespace, and taking it away would leave the other
dead while recorded as up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgns.engine import state
from wgns.engine.executor import Executor
from wgns.engine.ops import Op
from wgns.errors import WgnsError
from wgns.system import netns

if TYPE_CHECKING:
    from wgns.lifecycle.ops import DownHook

# wgns.lifecycle.ops (the DownHook op) is imported only for a journal that names it: the
# registry does that (KIND_MODULES), and most journals have no hooks
DOWN_HOOK = "down_hook"
PRE_DOWN = "pre-down"
POST_DOWN = "post-down"


def _hooks_of(when: str) -> Callable[[Op], bool]:
    return lambda op: op.kind == DOWN_HOOK and getattr(op, "when", None) == when


@dataclass
class DownResult:
    managed: bool  # NS had a wgns record
    errors: list[str] = field(default_factory=list)  # teardown errors: the record is kept
    hook_errors: list[str] = field(default_factory=list)  # failed hooks (teardown completed)
    left: list[int] = field(default_factory=list)  # processes inside NS before it went


def born_in(ns: str) -> list[str]:
    """The namespaces wgns manages whose birthplace is NS."""
    out = []
    for other in state.managed():
        if other == ns:
            continue
        try:
            rec = state.load(other)
        except WgnsError:
            continue  # damaged: its own commands say so
        if rec is not None and rec.birthplace == ns:
            out.append(other)
    return out


def _legacy_hooks(rec: state.Record) -> list[DownHook]:
    """Down hooks as records of older versions kept them (extra.down_hooks)."""
    if not rec.extra.get("down_hooks"):
        return []
    from wgns.lifecycle.ops import DownHook

    return [
        DownHook(
            when=str(h["when"]),
            command=str(h["command"]),
            ns=None if h.get("ns") is None else str(h["ns"]),
            ifname=str(h["ifname"]),
        )
        for h in rec.extra.pop("down_hooks", [])
    ]


def _run_legacy(hooks: list[DownHook], when: str, ns: str) -> list[str]:
    from wgns.engine.ops import Context

    errors = []
    for h in hooks:
        if h.when == when:
            try:
                h.undo(Context(ns=ns))
            except Exception as e:
                errors.append(str(e))
    return errors


def _forget(rec: state.Record, when: str) -> None:
    """Drop the DownHooks of WHEN that are still journaled (they failed): run once only."""
    kept = []
    for entry in rec.journal:
        try:
            op: Op | None = Op.from_json(entry)
        except WgnsError:
            op = None
        if not (op is not None and _hooks_of(when)(op)):
            kept.append(entry)
    rec.journal[:] = kept
    state.save(rec)


def down(ns: str) -> DownResult:
    """Undo everything wgns did to NS."""
    netns.validate_name(ns)
    with state.locked(ns, release_files=True):
        rec = state.load(ns)
        if rec is None:
            return DownResult(managed=False)
        dependents = born_in(ns)
        if dependents:
            raise WgnsError(
                f"{ns} is the birthplace of {', '.join(dependents)} (their tunnels leave through "
                f"it); nothing was changed",
                hint=f"take {'them' if len(dependents) > 1 else 'it'} down first: "
                + " && ".join(f"wgns down {d}" for d in dependents),
            )
        # counted now: once the namespace is deleted its name finds nothing
        left = leftover_processes(ns) if netns.exists(ns) else []
        rec.phase = "stopping"
        state.save(rec)
        from wgns.features import statusfile

        statusfile.withdraw(ns)  # status bars: it is going away (docs/status.md)
        ex = Executor(rec)
        legacy = _legacy_hooks(rec)
        hooks = bool(legacy) or any(e.get("kind") == DOWN_HOOK for e in rec.journal)
        hook_errors = _run_legacy(legacy, PRE_DOWN, ns)
        if hooks:  # else one pass over the journal: nothing to run before or after it
            hook_errors += ex.undo_where(_hooks_of(PRE_DOWN))
            _forget(rec, PRE_DOWN)
        errors = ex.undo_where(lambda op: op.kind != DOWN_HOOK)
        for entry in rec.journal:  # what undo_where could not even read
            try:
                Op.from_json(entry)
            except WgnsError as e:
                errors.append(str(e))
        if errors:
            if legacy:
                rec.extra["down_hooks"] = [h.to_json() for h in legacy if h.when == POST_DOWN]
                state.save(rec)
            return DownResult(True, errors, hook_errors, left)
        if hooks:
            hook_errors += ex.undo_where(_hooks_of(POST_DOWN))
            hook_errors += _run_legacy(legacy, POST_DOWN, ns)
        state.remove(ns)
        return DownResult(True, [], hook_errors, left)


def leftover_processes(ns: str) -> list[int]:
    """Processes in NS (after `down` they have lost their network)."""
    me = os.getpid()
    return [p for p in netns.pids_inside(ns) if p != me]
