"""wgns.engine.state: the record (json, atomic, damaged files refused clearly) and the lock."""

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
from wgns.system import startup


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
    (state_dir / "vpn.json").write_text('{"ns": "vpn", "phase": "up"')  # torn by hand
    with pytest.raises(WgnsError, match=r"state record .* is damaged"):
        state.load("vpn")


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
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
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


@given(
    st.sampled_from(["starting", "up", "stopping"]),
    st.lists(st.dictionaries(st.sampled_from(["phase", "kind", "x"]), st.text()), max_size=3),
    st.text(),
)
def test_the_exec_paths_phase_reader_agrees_with_load(
    phase: str, journal: list[dict[str, str]], ns_text: str
) -> None:
    # `wgns exec` reads the phase of what save() writes with wgns.system.startup.record_phase:
    # journal entries and strings that look like the phase line must not fool it
    import tempfile

    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        mp.setattr(state, "STATE_DIR", d)
        mp.setattr(startup, "RECORD_DIR", d)
        rec = state.Record(ns="vpn", phase=phase, profile=f'\n "phase": "up",\n{ns_text}')
        rec.journal.extend(journal)
        state.save(rec)
        loaded = state.load("vpn")
        assert loaded is not None
        assert startup.record_phase("vpn") == loaded.phase == phase


def test_the_exec_paths_phase_reader_on_missing_torn_and_foreign_records(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup, "RECORD_DIR", str(state_dir))
    assert startup.record_phase("none") is None
    state_dir.mkdir()
    (state_dir / "torn.json").write_text('{\n "phase": "up",\n "ns": "torn"')  # no closing brace
    with pytest.raises(WgnsError, match="is damaged"):
        startup.record_phase("torn")
    with pytest.raises(WgnsError, match="is damaged"):
        state.load("torn")  # the same line from the engine
    (state_dir / "compact.json").write_text('{"ns": "compact", "phase": "up"}')  # not save()'s
    assert startup.record_phase("compact") == "up"
    (state_dir / "odd.json").write_text('{\n "phase": "sideways",\n "ns": "odd"\n}')
    assert startup.record_phase("odd") == "sideways"


def test_save_writes_json_with_indent_1_and_sorted_keys(state_dir: Path) -> None:
    rec = state.Record(ns="vpn", phase="up", extra={"b": 1, "a": [2]})
    state.save(rec)
    text = (state_dir / "vpn.json").read_text()
    assert text == json.dumps(rec.to_json(), indent=1, sort_keys=True)
    assert json.loads(text)["phase"] == "up" and json.loads(text)["format"] == state.FORMAT
    assert [p.name for p in state_dir.iterdir()] == ["vpn.json"]  # no temporary file left


@pytest.mark.parametrize(
    "text",
    [
        "",  # emptied
        '{\n "ns": "vpn",\n "phase": "up",\n "jour',  # truncated mid-write
        "\x00\x00\x00",  # not JSON
        "[1, 2]",  # JSON, wrong shape
        '{"ns": "vpn", "journal": "nope"}',  # a field of the wrong type
    ],
)
def test_a_damaged_record_is_a_wgns_error_naming_the_file_and_the_fix(
    state_dir: Path, text: str
) -> None:
    state.save(state.Record(ns="vpn", phase="up"))
    path = state_dir / "vpn.json"
    path.write_text(text)
    with pytest.raises(WgnsError) as e:
        state.load("vpn")
    assert f"state record {path} is damaged" in str(e.value)
    assert e.value.hint is not None and f"rm {path}" in e.value.hint


def test_record_ops_and_find_parse_the_journal(state_dir: Path) -> None:
    from wgns.engine.ops import AddNetns, NftTable

    rec = state.Record(ns="vpn")
    rec.journal.append(AddNetns(ns="vpn").to_json())
    table = NftTable(ns="vpn", family="inet", table="wgns", ruleset="table inet wgns {}")
    rec.journal.append(table.to_json())
    state.save(rec)
    back = state.load("vpn")
    assert back is not None
    assert back.ops() == [AddNetns(ns="vpn"), table]
    assert back.find(NftTable) == [table]
    assert back.find(AddNetns) == [AddNetns(ns="vpn")]
