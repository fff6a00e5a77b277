"""The one place operations are applied and undone.

Every operation is appended to the state record's journal *before* it is applied, so the record
always covers everything that may exist. When a run fails, what that run journaled is undone in
reverse: exactly what it did is rolled back, and nothing that was there before it.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from wgns import log
from wgns.engine import state
from wgns.engine.ops import AddNetns, Context, Op
from wgns.errors import WgnsError
from wgns.system import netns


def _fault_point() -> tuple[int, bool] | None:
    """Fault injection for the crash tests: WGNS_FAULT_KILL_AT=N kills this process with SIGKILL
    right before applying the op at journal index N (0-based), and N+ right after applying it."""
    spec = os.environ.get("WGNS_FAULT_KILL_AT", "")
    if not spec:
        return None
    return int(spec.rstrip("+")), spec.endswith("+")


class _Entry:
    """An op and its journal entry, which each checkpoint replaces (a new dict)."""

    def __init__(self, op: Op, entry: dict[str, Any]) -> None:
        self.op = op
        self.entry = entry


class Executor:
    """Applies ops to RECORD's namespace, journaling each in RECORD (saved) before it runs."""

    def __init__(self, record: state.Record) -> None:
        self.record = record
        self._fault = _fault_point()
        self._unfinished: list[tuple[Op, Context]] = []  # applied, maybe still working

    def _save(self) -> None:
        state.save(self.record)

    def _context(self, slot: _Entry, **kw: Any) -> Context:
        """A context whose checkpoint rewrites SLOT's journal entry in place and saves."""

        def checkpoint() -> None:
            journal = self.record.journal
            for i, e in enumerate(journal):  # by identity: indexes shift as entries are dropped
                if e is slot.entry:
                    slot.entry = journal[i] = slot.op.to_json()
                    self._save()
                    return

        return Context(ns=self.record.ns, on_checkpoint=checkpoint, **kw)

    def settle(self) -> None:
        """Finish every op whose work may still run in the background (see Op.finish)."""
        while self._unfinished:
            op, ctx = self._unfinished.pop(0)
            before = copy.deepcopy(op.result)
            op.finish(ctx)
            if op.result != before:
                ctx.checkpoint()

    def apply(self, op: Op) -> None:
        """Journal OP (saved), then apply it; background work of earlier ops is finished
        first unless OP may run beside it."""
        if not op.beside_background:
            self.settle()
        op.prepare(Context(ns=self.record.ns))  # nothing to checkpoint: not journaled yet
        slot = _Entry(op, op.to_json())
        ctx = self._context(slot)
        self.record.journal.append(slot.entry)
        index = len(self.record.journal) - 1
        self._save()
        log.debug("[#] %s", op.describe())
        if self._fault == (index, False):
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            op.apply(ctx)
        except OSError as e:  # a read-only /etc, a full /run: one line, not a traceback
            raise WgnsError(f"cannot {op.describe()}: {e.strerror or e}") from e
        self._unfinished.append((op, ctx))
        if op.result != slot.entry.get("result"):
            ctx.checkpoint()
        if self._fault == (index, True):
            self.settle()
            os.kill(os.getpid(), signal.SIGKILL)

    def apply_all(self, ops: Sequence[Op]) -> None:
        """Apply OPS in order. On any failure, once nothing runs in the background any more,
        undo in reverse the entries this call journaled (and only those: what the journal held
        before stays, untouched), drop the ones undone from the journal, save, and re-raise
        (rollback errors added to a WgnsError's message). An entry whose undo failed stays
        journaled, so that `down` can try again."""
        before = {id(e) for e in self.record.journal}
        try:
            for op in ops:
                self.apply(op)
            self.settle()
        except BaseException as exc:
            errors = []
            while self._unfinished:  # wait for what still runs, so that undo sees it all
                op, ctx = self._unfinished.pop(0)
                try:
                    op.finish(ctx)
                except Exception as e:
                    if e is not exc:
                        errors.append(str(e))
            errors += self._undo(lambda e: id(e) not in before, lambda op: True, report=True)
            if errors and isinstance(exc, WgnsError):
                exc.message += " (rollback also failed: " + "; ".join(errors) + ")"
            raise

    def undo_where(self, select: Callable[[Op], bool]) -> list[str]:
        """Undo the journaled ops SELECT picks, in reverse, best effort (keep going); drop from
        the journal the ones undone without error, save; return the errors."""
        return self._undo(lambda e: True, select, report=False)

    def _undo(
        self,
        scope: Callable[[dict[str, Any]], bool],
        select: Callable[[Op], bool],
        *,
        report: bool,
    ) -> list[str]:
        """Undo the ops of the journal entries in SCOPE that SELECT picks. With REPORT, an entry
        in SCOPE that cannot be read is an error (it stays journaled either way)."""
        chosen: list[_Entry] = []
        kept: list[Op] = []
        errors: list[str] = []
        for entry in self.record.journal:
            try:
                op = Op.from_json(entry)
            except WgnsError as e:
                if report and scope(entry):
                    errors.append(str(e))
                continue
            if scope(entry) and select(op):
                chosen.append(_Entry(op, entry))
            else:
                kept.append(op)
        # namespaces this undo deletes, with nothing inside: what lives only in them goes too
        created = {s.op.ns for s in chosen if isinstance(s.op, AddNetns)}
        doomed = frozenset(ns for ns in created if not netns.pids_inside(ns))
        undone: list[_Entry] = []
        for slot in reversed(chosen):
            ctx = self._context(slot, doomed=doomed, remaining=tuple(kept))
            try:
                log.debug("[#] undo: %s", slot.op.describe())
                slot.op.undo(ctx)
            except Exception as e:
                errors.append(f"{slot.op.describe()}: {e}")
                ctx.checkpoint()  # what its undo did manage to free is recorded as freed
                continue
            undone.append(slot)
        gone = {id(s.entry) for s in undone}
        self.record.journal[:] = [e for e in self.record.journal if id(e) not in gone]
        self._save()
        return errors


def undo_journal(record: state.Record) -> list[str]:
    """Undo RECORD's whole journal in reverse (`down`), best effort: the entries undone are
    dropped from it and RECORD is saved. Return the errors."""
    return Executor(record)._undo(lambda e: True, lambda op: True, report=True)
