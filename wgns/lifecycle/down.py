"""`down`: undo exactly what the state record says wgns did, best effort, idempotent.

Kept apart from `wgns.lifecycle.up` so that `wgns down` imports only what undoing needs, not the
profile parser, the planner and the probes.
"""

from __future__ import annotations

import posix

from wgns import log
from wgns.engine import state
from wgns.engine.executor import undo_journal
from wgns.engine.ops import Context, RunHook
from wgns.errors import WgnsError
from wgns.system import netns


def down(ns: str) -> tuple[bool, list[str]]:
    """Undo everything wgns did to NS: (was it managed, the errors met). Teardown does not stop
    at the first error; a partial teardown keeps the record so that `down` can be run again."""
    netns.validate_name(ns)
    with state.locked(ns, release_files=True):
        rec = state.load(ns)
        if rec is None:
            return False, []
        rec.phase = "stopping"
        state.save(rec)
        errors: list[str] = []
        hooks = rec.extra.get("down_hooks", [])
        errors.extend(run_hooks(hooks, "pre-down"))
        errors.extend(undo_journal(rec))
        errors.extend(run_hooks(hooks, "post-down"))
        if errors:
            return True, errors
        state.remove(ns)
        return True, []


def run_hooks(hooks: list[dict[str, str | None]], when: str) -> list[str]:
    """Run the recorded PreDown/PostDown hooks of WHEN; return their errors."""
    errors = []
    for h in hooks:
        if h["when"] != when:
            continue
        where = h["ns"]
        if where is not None and not netns.exists(where):
            log.warning(
                "wgns: %s hook skipped, namespace %s is gone: %s", when, where, h["command"]
            )
            continue
        try:
            hook = RunHook(when=when, command=str(h["command"]), ns=where, ifname=str(h["ifname"]))
            hook.apply(Context(ns=str(h["ns"] or "")))
        except (WgnsError, OSError) as e:
            errors.append(str(e))
    return errors


def leftover_processes(ns: str) -> list[int]:
    """Processes still in NS (after `down` they have lost their network)."""
    me = posix.getpid()
    return [p for p in netns.pids_inside(ns) if p != me]
