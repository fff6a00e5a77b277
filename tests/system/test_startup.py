"""wgns.system.startup: each shim of `wgns exec`'s path against the standard thing it replaces."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgns.errors import WgnsError
from wgns.system import startup
from wgns.testing.sandbox import Sandbox

# ------------------------------------------------------------------------------ os and os.path

PARTS = st.text(alphabet="ab/.", max_size=6)
PLACES = [
    "/",
    "//",
    "/proc",
    "/proc/",
    "/proc/self",
    "/dev/null",
    "/etc/hostname",
    "/no/such/place",
    "",
    "relative",
    "/sys",
    "/run",
    "/proc/self/cwd",  # a symlink
]


@given(PARTS, st.lists(PARTS, max_size=3))
def test_join_is_os_path_join(first: str, rest: list[str]) -> None:
    assert startup.join(first, *rest) == os.path.join(first, *rest)


@pytest.mark.parametrize("path", PLACES)
def test_predicates_agree_with_os_path(path: str) -> None:
    assert startup.isdir(path) == os.path.isdir(path)
    assert startup.isfile(path) == os.path.isfile(path)
    assert startup.ismount(path) == os.path.ismount(path)


def test_fs_encoding_round_trips_undecodable_bytes() -> None:
    raw = b"caf\xe9-\xff"
    assert startup.fsdecode(raw) == os.fsdecode(raw)
    assert startup.fsencode(startup.fsdecode(raw)) == raw == os.fsencode(os.fsdecode(raw))


MOUNTS = r"""
import json, os
from wgns.system import libc, netns, startup
os.makedirs("/run/pt/dir", exist_ok=True)
open("/run/pt/file", "w").close()
open("/run/pt/plain", "w").close()
libc.mount("/etc/hostname", "/run/pt/file", None, netns.MS_BIND)  # a mount on a file
libc.mount("tmpfs", "/run/pt/dir", "tmpfs")
netns.add("pt")
seen = {p: [startup.ismount(p), os.path.ismount(p)]
        for p in ("/run/pt/file", "/run/pt/dir", "/run/pt/plain", "/run/pt", "/run/netns/pt")}
netns.delete("pt")
print(json.dumps(seen))
"""


def test_ismount_sees_mounts_on_files_as_os_path_does(sandbox: Sandbox) -> None:
    seen = json.loads(sandbox.python(MOUNTS).stdout)
    assert seen["/run/pt/file"] == [True, True]
    assert seen["/run/netns/pt"] == [True, True]
    assert seen["/run/pt/dir"] == [True, True]
    assert seen["/run/pt/plain"] == [False, False]
    assert seen["/run/pt"][0] == seen["/run/pt"][1]


def test_posix_is_what_os_exports() -> None:
    """The path calls posix directly: the very functions os re-exports."""
    import posix

    for name in ("open", "close", "stat", "lstat", "listdir", "getcwd", "chdir", "execve"):
        assert getattr(posix, name) is getattr(os, name)
    for name in ("setgroups", "setresgid", "setresuid", "getgrouplist", "fork", "pipe2"):
        assert getattr(posix, name) is getattr(os, name)


def test_signal_and_stat_are_the_modules_c_halves() -> None:
    import signal
    import stat

    assert startup.S_ISDIR is stat.S_ISDIR and startup.S_ISLNK is stat.S_ISLNK
    assert startup.S_ISREG is stat.S_ISREG
    assert (startup.SIGPIPE, startup.SIGXFSZ) == (signal.SIGPIPE, signal.SIGXFSZ)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        startup.set_signal(startup.SIGXFSZ, startup.SIG_DFL)
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGXFSZ, old)


# ---------------------------------------------------------------------------------- contextlib


@pytest.mark.parametrize("shim", [startup.suppress, contextlib.suppress])
def test_suppress_is_contextlib_suppress(shim: Any) -> None:
    """The same body under both: what is swallowed, what goes through."""
    reached = []
    with shim(OSError):
        raise FileNotFoundError("gone")  # a subclass
    with shim(KeyError, OSError):
        raise KeyError("k")
    with shim(OSError):
        reached.append("body ran")
    assert reached == ["body ran"]
    with pytest.raises(ValueError), shim(OSError):
        raise ValueError("not an OSError")
    with pytest.raises(KeyboardInterrupt), shim(Exception):
        raise KeyboardInterrupt
    with shim():
        reached.append("nothing listed")
    with pytest.raises(OSError), shim():
        raise OSError


# ----------------------------------------------------------------------------------- the record

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (json.loads reads NaN, and NaN != NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _json_loads(text: str) -> tuple[str, Any]:
    """What json.loads gives for TEXT: ("value", value) or ("error", its message)."""
    try:
        return "value", json.loads(text)
    except json.JSONDecodeError as e:
        return "error", str(e)


def _startup_loads(text: str) -> tuple[str, Any]:
    try:
        return "value", startup.loads(text)
    except json.JSONDecodeError as e:
        return "error", str(e)


@given(JSON, st.sampled_from([None, 0, 1, 2]), st.booleans(), st.booleans())
def test_loads_is_json_loads_on_valid_documents(
    value: Any, indent: int | None, sort_keys: bool, ascii_only: bool
) -> None:
    """Whatever the writer's layout: indentation, key order, escapes."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=ascii_only)
    for variant in (text, f"\n {text}\n\t", text + "\n"):
        kind, got = _startup_loads(variant)
        assert kind == "value" and _same(got, json.loads(variant))


@given(JSON, st.data())
def test_loads_is_json_loads_on_damaged_documents(value: Any, data: st.DataObject) -> None:
    """Truncated, extended or corrupted: the same value or the same error as json.loads."""
    text = json.dumps({"phase": "up", "journal": value}, indent=1, sort_keys=True)
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(alphabet='{}[]",:0a \\\n\ufeff', max_size=3))
    for variant in (text[:cut], text[:cut] + junk + text[cut:], junk + text):
        want, got = _json_loads(variant), _startup_loads(variant)
        assert want[0] == got[0] and (
            _same(want[1], got[1]) if want[0] == "value" else want[1] == got[1]
        )


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity, -Infinity]", '"\\ud800"', "1e400", "[1,]", '"a\tb"', "\ufeff{}"]
)
def test_loads_is_json_loads_on_its_odd_corners(text: str) -> None:
    want, got = _json_loads(text), _startup_loads(text)
    assert want[0] == got[0] and (
        _same(want[1], got[1]) if want[0] == "value" else want[1] == got[1]
    )


def test_record_phase_reads_any_layout_and_names_a_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup, "RECORD_DIR", str(tmp_path))
    record = tmp_path / "vpn.json"
    assert startup.record_phase("vpn") is None  # no record: not managed
    for text in (
        json.dumps({"phase": "up", "ns": "vpn"}, indent=1, sort_keys=True),
        json.dumps({"ns": "vpn", "phase": "stopping"}),
        '{"journal": [{"phase": "no"}], "phase": "starting"}',
    ):
        record.write_text(text)
        assert startup.record_phase("vpn") == json.loads(text)["phase"]
    for text, why in (
        ('{\n "phase": "up",\n "ns": "v', "Unterminated string starting at: line 3 column 8"),
        ("", "Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", "not a JSON object"),
        ('{"ns": "vpn"}', "no phase"),
        ('{"phase": 1}', "no phase"),
    ):
        record.write_text(text)
        with pytest.raises(WgnsError) as info:
            startup.record_phase("vpn")
        message = str(info.value)
        assert message.startswith(f"state record {record} is damaged ({why}")
        assert "\n" not in message and "delete the file" in message
    record.write_bytes(b'{"phase": "\xff"}')
    with pytest.raises(WgnsError, match="is damaged"):
        startup.record_phase("vpn")
