"""The one place operations are applied.

Every operation is appended to the state record's journal *before* it is applied, so the record
always covers everything that may exist. On failure the journal is undone in reverse: exactly
what was done is rolled back, and nothing else.
"""

from __future__ import annotations

import posix

from wgns import log
from wgns.engine import state
from wgns.engine.ops import SIGKILL, Op, Teardown
from wgns.errors import WgnsError
from wgns.system import netns

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable


def _fault_point() -> tuple[int, bool] | None:
    """Fault injection for the crash tests: WGNS_FAULT_KILL_AT=N kills this process with SIGKILL
    right before applying operation N (0-based), and N+ right after applying it."""
    spec = posix.environ.get(b"WGNS_FAULT_KILL_AT", b"").decode()
    if not spec:
        return None
    return int(spec.rstrip("+")), spec.endswith("+")


class Executor:
    def __init__(self, record: state.Record) -> None:
        self.record = record
        self._fault = _fault_point()
        self._unfinished: list[Op] = []  # applied, maybe still working in the background

    def settle(self) -> None:
        """Finish every op whose work may still run in the background (see Op.finish)."""
        while self._unfinished:
            op = self._unfinished.pop(0)
            before = dict(op.result)
            op.finish()
            if op.result != before:
                op.checkpoint()

    def _save(self) -> None:
        state.save(self.record)

    def apply(self, op: Op) -> None:
        if not op.beside_background:
            self.settle()
        op.prepare()
        entry = op.to_json()
        self.record.journal.append(entry)
        index = len(self.record.journal) - 1

        def checkpoint() -> None:
            self.record.journal[index] = op.to_json()
            self._save()

        op._checkpoint_cb = checkpoint  # type: ignore[attr-defined]
        self._save()
        log.debug("[#] %s", op.describe())
        if self._fault == (index, False):
            posix.kill(posix.getpid(), SIGKILL)
        op.apply()
        self._unfinished.append(op)
        if op.result != entry.get("result"):
            checkpoint()
        if self._fault == (index, True):
            self.settle()
            posix.kill(posix.getpid(), SIGKILL)

    def apply_all(self, ops: Iterable[Op]) -> None:
        """Apply OPS in order; on any failure undo everything journaled, then re-raise."""
        try:
            for op in ops:
                self.apply(op)
            self.settle()
        except BaseException as exc:
            errors = []
            while self._unfinished:  # wait for what still runs, so that undo sees it all
                try:
                    self._unfinished.pop(0).finish()
                except Exception as e:
                    if e is not exc:
                        errors.append(str(e))
            errors += undo_journal(self.record.journal)
            self.record.journal.clear()
            if errors and isinstance(exc, WgnsError):
                exc.message += " (rollback also failed: " + "; ".join(errors) + ")"
            raise


def undo_journal(journal: list[dict[str, object]]) -> list[str]:
    """Undo every journaled op in reverse, best effort: keep going, return all errors."""
    errors: list[str] = []
    created = {str(e["ns"]) for e in journal if e.get("kind") == "netns_add"}
    doomed = frozenset(ns for ns in created if not netns.pids_inside(ns))
    ctx = Teardown(doomed=doomed)
    for entry in reversed(journal):
        try:
            op = Op.from_json(dict(entry))
        except (KeyError, TypeError) as e:
            errors.append(f"unknown journal entry {entry.get('kind')!r}: {e}")
            continue
        try:
            log.debug("[#] undo: %s", op.describe())
            op.undo(ctx)
        except Exception as e:
            errors.append(f"{op.describe()}: {e}")
    return errors
