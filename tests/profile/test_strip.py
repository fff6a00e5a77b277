"""`wgns strip` prints byte-for-byte what the real `wg-quick strip` prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgns.errors import ConfigError
from wgns.profile.wgconf import strip_conf

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("*.conf"))
ROOT = Path(__file__).resolve().parent.parent.parent

needs_wg_quick = pytest.mark.skipif(
    shutil.which("wg-quick") is None or os.geteuid() != 0,
    reason="needs wg-quick, run as root (it re-runs itself through sudo otherwise)",
)


def real_strip(data: bytes) -> tuple[int, bytes]:
    """wg-quick insists on a file named like an interface: give it one."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "wgtest0.conf"
        f.write_bytes(data)
        f.chmod(0o600)
        proc = subprocess.run(["wg-quick", "strip", str(f)], capture_output=True, timeout=30)
    return proc.returncode, proc.stdout


def our_strip(data: bytes) -> tuple[int, bytes]:
    try:
        out = strip_conf(data.decode("utf-8", "surrogateescape"))
    except ConfigError:
        return 1, b""
    return 0, out.encode("utf-8", "surrogateescape")


@needs_wg_quick
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_match_wg_quick(sample: Path) -> None:
    data = sample.read_bytes()
    assert our_strip(data) == real_strip(data)


CASES: dict[str, bytes] = {
    "empty file": b"",
    "only newline": b"\n",
    "no trailing newline": b"[Interface]\nAddress = 10.0.0.1",
    "whitespace-only last line": b"[Interface]\nAddress = 10.0.0.1\n \t ",
    "crlf": b"[Interface]\r\nAddress = 10.0.0.1/32\r\nPrivateKey = x\r\n",
    "bare cr": b"[Interface]\rAddress = 1\r\n",
    "tabs and spaces": b" \t[Interface] \t\n\t Address\t=\t1 \t\n  ListenPort = 1  \t\n",
    "vertical tab and form feed": b"\v[Interface]\f\n\vAddress = 1\n\fMTU = 1\n",
    "nul bytes": b"[Inter\0face]\nAdd\0ress = 1\n\0\nfoo\0bar\n",
    "leading spaces around nul": b" \0 [Interface]\n \0 MTU = 1 \0 \n",
    "comments": b"# c\n[Interface] # c\nAddress = 1 # c\n# Address = 2\nPostUp = a # b\n",
    "hash inside key": b"[Interface]\nAddr#ess = 1\nMT#U\n",
    "case": b"[INTERFACE]\naddress = 1\nmTu = 2\nDns = 3\ntable=4\npreup=5\nPOSTDOWN=6\n"
    b"saveconfig=TRUE\n",
    "interface key inside peer": b"[Interface]\n[Peer]\nAddress = 1\nDNS = 2\n",
    "peer then interface": b"[Peer]\nMTU = 1\n[Interface]\nMTU = 1\n",
    "spaced header": b"[ Interface ]\nAddress = 1\n",
    "header with value": b"[Interface]=x\nAddress = 1\n[Peer]\n",
    "header with junk": b"[Interface] x\nAddress = 1\n",
    "any bracket ends interface": b"[Interface]\n[\nAddress = 1\n",
    "no equals": b"[Interface]\nAddress\nMTU\nPostUp\n",
    "empty key": b"[Interface]\n= 1\n==\n",
    "spaced key": b"[Interface]\nPost Up = x\nAdd ress = 1\n",
    "utf-8": "[Interface]\n# héllo ☃\nAddress = 1 # ü\nÄddress = 2\n".encode(),
    "invalid utf-8": b"[Interface]\n\xff\xfe = 1\nAddress = \xc3\n\xc3\xa9\n",
    "non-ascii lookalikes": "[Interface]\n\uff21ddress = 1\nSaveConfi\u0261 = x\n".encode(),
    "backslashes": b"[Interface]\nPostUp = echo a\\\nb\\\\\n",
    "many blank lines": b"\n\n\n[Interface]\n\n\nAddress=1\n\n\n",
    "saveconfig bad": b"[Interface]\nSaveConfig = maybe\n",
    "saveconfig bad outside interface": b"[Peer]\nSaveConfig = maybe\n",
    "saveconfig empty": b"[Interface]\nSaveConfig\n",
    "full sample with crlf": (DATA / "full.conf").read_bytes().replace(b"\n", b"\r\n"),
}


@needs_wg_quick
@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_cases_match_wg_quick(data: bytes) -> None:
    assert our_strip(data) == real_strip(data)


def test_strip_shape() -> None:
    text = "[Interface]\nPrivateKey = k\nAddress = 10.0.0.1\n  # note  \n[Peer]\nAddress = x\n"
    assert strip_conf(text) == "[Interface]\nPrivateKey = k\n# note\n[Peer]\nAddress = x\n\n"
    assert strip_conf("") == "\n"


def test_strip_error_names_line() -> None:
    with pytest.raises(ConfigError) as info:
        strip_conf("[Interface]\n\nSaveConfig = yes\n", path="x.conf")
    assert str(info.value) == "x.conf:3: SaveConfig: 'yes' is neither true nor false"


# Lines built from the pieces wg-quick's parser reacts to, plus arbitrary bytes.
_PIECES = [
    b"[Interface]",
    b"[interface]",
    b"[Peer]",
    b"[",
    b"]",
    b"Address",
    b"DNS",
    b"MTU",
    b"Table",
    b"PreUp",
    b"PostUp",
    b"PreDown",
    b"PostDown",
    b"SaveConfig",
    b"PrivateKey",
    b"ListenPort",
    b"true",
    b"FALSE",
    b"=",
    b"=",
    b"#",
    b" ",
    b" ",
    b"\t",
    b"\r",
    b"\v",
    b"\f",
    b"\0",
    b",",
    b"10.0.0.1/32",
    b"\xc3\xa9",
    b"\xff",
    b"\\",
]
_line = st.lists(
    st.one_of(st.sampled_from(_PIECES), st.binary(min_size=1, max_size=3)), max_size=6
).map(b"".join)
_text = st.tuples(
    st.lists(_line, max_size=10).map(b"\n".join), st.sampled_from([b"", b"\n", b" ", b"\r\n"])
).map(b"".join)


@needs_wg_quick
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_text)
def test_random_files_match_wg_quick(data: bytes) -> None:
    assert our_strip(data) == real_strip(data)


# --------------------------------------------------------------------------------------------
# The command


def wgns(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "wgns", *args], capture_output=True, cwd=cwd, env=env, timeout=30
    )


@needs_wg_quick
def test_command_matches_wg_quick(tmp_path: Path) -> None:
    data = (DATA / "full.conf").read_bytes() + b"# \xff not utf-8\nPostUp = x"
    f = tmp_path / "any name, not an interface name.conf"
    f.write_bytes(data)
    proc = wgns("strip", str(f))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == real_strip(data)[1]
    assert proc.stderr == b""


def test_command_by_name_is_in_etc(tmp_path: Path) -> None:
    proc = wgns("strip", "no-such-profile-xyz")
    assert proc.returncode == 2
    assert b"/etc/wgns/no-such-profile-xyz.conf" in proc.stderr


def test_command_errors(tmp_path: Path) -> None:
    proc = wgns("strip", str(tmp_path / "missing.conf"))
    assert proc.returncode == 2
    assert proc.stderr.decode() == f"wgns: {tmp_path / 'missing.conf'}: no such file\n"

    toml = tmp_path / "p.toml"
    toml.write_text("")
    proc = wgns("strip", str(toml))
    assert proc.returncode == 2
    assert b"is a TOML profile" in proc.stderr

    bad = tmp_path / "bad.conf"
    bad.write_text("[Interface]\nSaveConfig = sure\n")
    proc = wgns("strip", str(bad))
    assert (proc.returncode, proc.stdout) == (2, b"")
    assert proc.stderr.decode() == f"wgns: {bad}:2: SaveConfig: 'sure' is neither true nor false\n"

    d = tmp_path / "dir.conf"
    d.mkdir()
    proc = wgns("strip", str(d))
    assert proc.returncode == 2
    assert b"cannot read" in proc.stderr
