"""wgns.engine.executor: the order in which operations run, finish and are undone.

The operations here are plain Python recording what happens to them (the executor is pure
bookkeeping; the real operations are exercised by test_lifecycle). Only the state record is
written, to a temporary directory standing in for /run/wgns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wgns.engine import state
from wgns.engine.executor import Executor
from wgns.engine.ops import Op, Teardown
from wgns.errors import WgnsError

EVENTS: list[str] = []


class Recorded(Op):
    """An op that logs apply/finish/undo; ``background``: its work ends only in finish()."""

    kind = "test_recorded"
    name: str
    background: bool
    fail_in: str

    def __init__(
        self,
        *,
        name: str,
        background: bool = False,
        fail_in: str = "",
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(result=result)
        self.name = name
        self.background = background
        self.fail_in = fail_in

    def describe(self) -> str:
        return self.name

    def apply(self) -> None:
        EVENTS.append(f"apply {self.name}")
        if self.fail_in == "apply":
            raise WgnsError(f"{self.name} failed")

    def finish(self) -> None:
        if self.background:
            EVENTS.append(f"finish {self.name}")
            if self.fail_in == "finish":
                raise WgnsError(f"{self.name} failed in the background")

    def undo(self, ctx: Teardown) -> None:
        EVENTS.append(f"undo {self.name}")


class Beside(Recorded):
    """The same, allowed to run while background work goes on."""

    kind = "test_recorded_beside"
    beside_background = True


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    EVENTS.clear()


def run(ops: list[Op]) -> None:
    Executor(state.Record(ns="t")).apply_all(ops)


def test_background_work_is_finished_before_an_op_that_is_not_beside_it() -> None:
    run(
        [
            Beside(name="nft", background=True),
            Beside(name="files"),
            Recorded(name="move", background=True),
            Beside(name="uapi"),
            Recorded(name="addresses"),
        ]
    )
    assert EVENTS == [
        "apply nft",
        "apply files",
        "finish nft",  # `move` is not beside background work: nft must be done first
        "apply move",
        "apply uapi",
        "finish move",  # and `addresses` waits for the move
        "apply addresses",
    ]


def test_background_work_still_running_at_the_end_is_finished() -> None:
    run([Beside(name="a"), Beside(name="b", background=True)])
    assert EVENTS == ["apply a", "apply b", "finish b"]


def test_a_background_failure_rolls_back_everything_after_the_rest_finished() -> None:
    ops: list[Op] = [
        Beside(name="create", background=True),
        Beside(name="nft", background=True, fail_in="finish"),
        Recorded(name="link"),
    ]
    with pytest.raises(WgnsError, match="nft failed in the background"):
        run(ops)
    assert EVENTS == [
        "apply create",
        "apply nft",
        "finish create",
        "finish nft",
        # the journal is undone in reverse, once nothing runs any more
        "undo nft",
        "undo create",
    ]


def test_a_failing_apply_first_waits_for_work_still_running_then_undoes() -> None:
    ops: list[Op] = [
        Beside(name="create", background=True),
        Beside(name="files", fail_in="apply"),
    ]
    with pytest.raises(WgnsError, match="files failed"):
        run(ops)
    assert EVENTS == ["apply create", "apply files", "finish create", "undo files", "undo create"]


def test_the_state_record_journals_each_op_before_it_is_applied(tmp_path: Path) -> None:
    seen: list[int] = []

    class Peek(Op):
        kind = "test_peek"

        def describe(self) -> str:
            return "peek"

        def apply(self) -> None:
            rec = state.load("t")
            assert rec is not None
            seen.append(len(rec.journal))

    run([Peek(), Peek()])
    assert seen == [1, 2]
