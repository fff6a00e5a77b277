"""wgns.engine.executor: the order in which operations run, finish and are undone.

The operations here are plain Python recording what happens to them (the executor is pure
bookkeeping; the real operations are exercised by test_lifecycle). Only the state record is
written, to a temporary directory standing in for /run/wgns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from wgns.engine import state
from wgns.engine.executor import Executor, undo_journal
from wgns.engine.ops import Context, Op
from wgns.errors import WgnsError

EVENTS: list[str] = []


@dataclass(kw_only=True)
class Recorded(Op):
    """An op that logs apply/finish/undo; ``background``: its work ends only in finish()."""

    kind = "test_recorded"
    name: str
    background: bool = False
    fail_in: str = ""

    def describe(self) -> str:
        return self.name

    def apply(self, ctx: Context) -> None:
        EVENTS.append(f"apply {self.name}")
        if self.fail_in == "apply":
            raise WgnsError(f"{self.name} failed")

    def finish(self, ctx: Context) -> None:
        if self.background:
            EVENTS.append(f"finish {self.name}")
            if self.fail_in == "finish":
                raise WgnsError(f"{self.name} failed in the background")

    def undo(self, ctx: Context) -> None:
        EVENTS.append(f"undo {self.name}")
        if self.fail_in == "undo":
            raise WgnsError(f"{self.name} cannot be undone")


@dataclass(kw_only=True)
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

    @dataclass(kw_only=True)
    class Peek(Op):
        kind = "test_peek"

        def describe(self) -> str:
            return "peek"

        def apply(self, ctx: Context) -> None:
            rec = state.load("t")
            assert rec is not None
            seen.append(len(rec.journal))

    run([Peek(), Peek()])
    assert seen == [1, 2]


def names(rec: state.Record) -> list[str]:
    return [str(e["name"]) for e in rec.journal]


def test_a_failing_run_undoes_only_what_it_journaled_and_leaves_earlier_entries_alone() -> None:
    rec = state.Record(ns="t")
    Executor(rec).apply_all([Recorded(name="up 1"), Recorded(name="up 2")])
    EVENTS.clear()
    with pytest.raises(WgnsError, match="add 2 failed"):
        Executor(rec).apply_all([Recorded(name="add 1"), Recorded(name="add 2", fail_in="apply")])
    assert EVENTS == ["apply add 1", "apply add 2", "undo add 2", "undo add 1"]
    assert names(rec) == ["up 1", "up 2"]
    saved = state.load("t")
    assert saved is not None and names(saved) == ["up 1", "up 2"]


def test_an_entry_whose_rollback_fails_stays_journaled_and_the_error_says_so() -> None:
    rec = state.Record(ns="t")
    ops: list[Op] = [Recorded(name="stuck", fail_in="undo"), Recorded(name="x", fail_in="apply")]
    with pytest.raises(WgnsError, match=r"x failed \(rollback also failed: stuck: stuck cannot"):
        Executor(rec).apply_all(ops)
    assert names(rec) == ["stuck"]  # `down` can try again


def test_undo_where_undoes_only_the_matching_ops_in_reverse_and_drops_them() -> None:
    rec = state.Record(ns="t")
    Executor(rec).apply_all([Recorded(name=n) for n in ("a", "fw 1", "b", "fw 2", "c")])
    EVENTS.clear()
    seen: list[tuple[str, ...]] = []

    @dataclass(kw_only=True)
    class Watch(Recorded):
        kind = "test_watch"

        def undo(self, ctx: Context) -> None:
            super().undo(ctx)
            seen.append(tuple(op.describe() for op in ctx.remaining))

    Executor(rec).apply_all([Watch(name="fw 3")])
    EVENTS.clear()
    errors = Executor(rec).undo_where(lambda op: op.describe().startswith("fw"))
    assert errors == []
    assert EVENTS == ["undo fw 3", "undo fw 2", "undo fw 1"]
    assert seen == [("a", "b", "c")]  # what stays journaled, for resources ops share
    assert names(rec) == ["a", "b", "c"]
    saved = state.load("t")
    assert saved is not None and names(saved) == ["a", "b", "c"]


def test_undo_where_keeps_what_failed_and_goes_on() -> None:
    rec = state.Record(ns="t")
    Executor(rec).apply_all(
        [Recorded(name="a"), Recorded(name="b", fail_in="undo"), Recorded(name="c")]
    )
    EVENTS.clear()
    errors = Executor(rec).undo_where(lambda op: True)
    assert errors == ["b: b cannot be undone"]
    assert EVENTS == ["undo c", "undo b", "undo a"]
    assert names(rec) == ["b"]


def test_undo_journal_undoes_everything_in_reverse_and_reports_unreadable_entries() -> None:
    rec = state.Record(ns="t")
    Executor(rec).apply_all([Recorded(name="a"), Recorded(name="b")])
    rec.journal.insert(1, {"kind": "ip_batch", "ns": "t", "lines": [], "result": {}})
    EVENTS.clear()
    errors = undo_journal(rec)
    assert EVENTS == ["undo b", "undo a"]
    assert len(errors) == 1 and "'ip_batch'" in errors[0] and "not supported any more" in errors[0]
    assert [e["kind"] for e in rec.journal] == ["ip_batch"]


def test_a_checkpoint_persists_what_an_op_learnt_while_it_runs() -> None:
    rec = state.Record(ns="t")
    persisted: list[object] = []

    @dataclass(kw_only=True)
    class Learns(Op):
        kind = "test_learns"

        def describe(self) -> str:
            return "learns"

        def apply(self, ctx: Context) -> None:
            self.result["pid"] = 42
            ctx.checkpoint()
            saved = state.load("t")
            assert saved is not None
            persisted.append(saved.journal[-1]["result"])

    Executor(rec).apply_all([Recorded(name="a"), Learns()])
    assert persisted == [{"pid": 42}]


def test_journal_fields_marked_not_journaled_stay_out_of_the_record() -> None:
    from wgns.engine.ops import ConfigureWireguard

    op = ConfigureWireguard(ifname="wg0", ns="t", backend="userspace", peers=1)
    op.config = object()  # type: ignore[assignment]  # stands in for the keys
    entry = op.to_json()
    assert "config" not in entry and entry["kind"] == "wg_config"
    assert "config" not in repr(op)
    back = Op.from_json(entry)
    assert back == ConfigureWireguard(ifname="wg0", ns="t", backend="userspace", peers=1)


# Entries as the wgns before the ops package journaled them (its to_json: public attributes)
OLD_JOURNAL: list[dict[str, object]] = [
    {"kind": "netns_add", "ns": "vpn", "result": {}},
    {
        "kind": "netns_files",
        "ns": "vpn",
        "files": {"resolv.conf": "nameserver 198.18.0.1\n"},
        "result": {"dir_created": True, "etc_netns_created": False, "prior": {}},
    },
    {
        "kind": "wg_create",
        "ifname": "wg0vpn",
        "backend": "userspace",
        "birthplace": None,
        "target": "vpn",
        "result": {"run_dir_created": True, "pid": 123, "starttime": 456},
    },
    {"kind": "link_move", "ifname": "wg0vpn", "source": None, "target": "vpn", "result": {}},
    {
        "kind": "nft_table",
        "ns": "vpn",
        "family": "inet",
        "table": "wgns",
        "ruleset": "table inet wgns {}\n",
        "result": {},
    },
    {
        "kind": "wg_config",
        "ifname": "wg0vpn",
        "ns": None,
        "backend": "userspace",
        "peers": 1,
        "result": {},
    },
    {"kind": "link_up", "ns": "vpn", "ifname": "lo", "result": {"was_up": False}},
    {
        "kind": "link_config",
        "ns": "vpn",
        "ifname": "wg0vpn",
        "addresses": ["198.18.0.2/32"],
        "mtu": 1420,
        "routes": [["0.0.0.0/0", None]],
        "lo_up": True,
        "result": {},
    },
    {"kind": "hook", "when": "post-up", "command": "true %i", "ns": None, "ifname": "wg0vpn",
     "result": {}},
]  # fmt: skip
# (the previous wgns's `forwards` entry is retired: see the next test and docs/forwards.md)


def test_journals_of_the_previous_wgns_still_load_and_write_back_the_same() -> None:
    rec = state.Record(ns="vpn", journal=[dict(e) for e in OLD_JOURNAL])
    state.save(rec)
    loaded = state.load("vpn")
    assert loaded is not None
    ops = loaded.ops()
    assert [op.kind for op in ops] == [e["kind"] for e in OLD_JOURNAL]
    assert [op.to_json() for op in ops] == OLD_JOURNAL
    from wgns.engine.ops import CreateWireguard

    (create,) = loaded.find(CreateWireguard)
    assert (create.backend, create.result["pid"]) == ("userspace", 123)


def test_a_journal_entry_that_cannot_be_read_is_a_wgns_error_saying_so() -> None:
    for entry, message in [
        ({"kind": "ip_batch", "ns": "vpn", "lines": []}, "not supported any more"),
        ({"kind": "forwards", "ns": "vpn", "forwards": []}, "not supported any more"),
        ({"kind": "teleport", "ns": "vpn"}, "unknown journal entry 'teleport'"),
        ({"ns": "vpn"}, "journal entry without a kind"),
        ({"kind": "netns_add", "ns": "vpn", "colour": 1}, r"unknown fields \['colour'\]"),
        ({"kind": "netns_add"}, "'netns_add' is incomplete"),
    ]:
        with pytest.raises(WgnsError, match=message):
            Op.from_json(entry)
