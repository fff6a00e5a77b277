"""wgns.engine.state: reading records without the json module, and the per-namespace lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgns.engine import state
from wgns.errors import WgnsError

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES, st.sampled_from([None, 1]))
def test_parse_json_agrees_with_json_loads(value: object, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert state._parse_json(text) == json.loads(text)
    assert state._parse_json(f"\n {text} \n") == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} trailing', "[1,]", "nul", '{"a" 1}'])
def test_parse_json_rejects_what_json_rejects(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        state._parse_json(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "wgns"
    monkeypatch.setattr(state, "STATE_DIR", str(d))
    return d


def test_record_round_trip(state_dir: Path) -> None:
    rec = state.Record(ns="vpn", created_ns=True, backend="userspace", phase="up")
    rec.journal.append({"kind": "netns", "name": 'vpn\u00e9\n"quoted"'})
    state.save(rec)
    back = state.load("vpn")
    assert back is not None and back.to_json() == rec.to_json()
    assert state.is_up("vpn")
    (state_dir / "vpn.json").write_text('{"ns": "vpn", "phase": "up"')  # torn by hand
    with pytest.raises(WgnsError, match=r"state record .* is unreadable"):
        state.load("vpn")
    assert not state.is_up("vpn")


def test_lock_files_removed_on_release_only_when_asked(state_dir: Path) -> None:
    with state.locked("a"):
        assert (state_dir / "a.lock").exists()
    assert (state_dir / "a.lock").exists()
    with state.locked("a") as lock:
        lock.release_files = True
    assert not state_dir.exists()


def test_second_holder_waits_then_fails_clearly(state_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from wgns.engine import state; state.STATE_DIR = sys.argv[1]\n"
            "with state.locked('b'):\n    print('held', flush=True); time.sleep(3)",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(WgnsError, match="namespace b is busy"),
            state.locked("b", wait=0.2),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with state.locked("b", wait=5):  # the holder died: its lock went with it
        pass


RECORD_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(RECORD_LIKE)
def test_dump_json_is_byte_identical_to_json_dumps(value: object) -> None:
    assert state._dump_json(value) == json.dumps(value, indent=1, sort_keys=True)


def test_dump_json_leaves_other_shapes_to_json() -> None:
    for value in ({1: "int key"}, {"a": float("nan")}, [float("-inf")], {"x": {"y": True}}):
        assert state._dump_json(value) == json.dumps(value, indent=1, sort_keys=True)
    with pytest.raises(TypeError):
        state._dump_json({"a": object()})


@given(
    st.sampled_from(["starting", "up", "stopping"]),
    st.lists(st.dictionaries(st.sampled_from(["phase", "kind", "x"]), st.text()), max_size=3),
    st.text(),
)
def test_phase_of_agrees_with_load(phase: str, journal: list[dict[str, str]], ns_text: str) -> None:
    # journal entries and strings that look like the phase line must not fool the line reader
    import tempfile

    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        mp.setattr(state, "STATE_DIR", d)
        rec = state.Record(ns="vpn", phase=phase, profile=f'\n "phase": "up",\n{ns_text}')
        rec.journal.extend(journal)
        state.save(rec)
        loaded = state.load("vpn")
        assert loaded is not None
        assert state.phase_of("vpn") == loaded.phase == phase
        assert state.is_up("vpn") == (phase == "up")


def test_phase_of_missing_torn_and_foreign_records(state_dir: Path) -> None:
    assert state.phase_of("none") is None and not state.is_up("none")
    state_dir.mkdir()
    (state_dir / "torn.json").write_text('{\n "phase": "up",\n "ns": "torn"')  # no closing brace
    with pytest.raises(WgnsError, match="is unreadable"):
        state.phase_of("torn")
    assert not state.is_up("torn")
    (state_dir / "compact.json").write_text('{"ns": "compact", "phase": "up"}')  # not save()'s
    assert state.phase_of("compact") == "up"
    (state_dir / "odd.json").write_text('{\n "phase": "sideways",\n "ns": "odd"\n}')
    assert state.phase_of("odd") == "sideways"  # whatever load() says, through load()
