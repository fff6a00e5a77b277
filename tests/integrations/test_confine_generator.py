"""The generator for profiles' `units` key, run for real the way systemd runs it: the script
scripts/systemd/wgns-generator.in (rendered as install does) with NORMAL EARLY LATE, against a
temporary profile directory (WGNS_PROFILE_DIR) and temporary output directories."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrations.unitfiles import PROFILE
from wgns.integrations.systemd.confine import dropin_text
from wgns.testing.sandbox import REPO_ROOT


def _profile(d: Path, name: str, head: str) -> Path:
    path = d / name
    path.write_text(PROFILE.format(head=head))
    path.chmod(0o600)
    return path


def _generator(tmp_path: Path) -> Path:
    """scripts/systemd/wgns-generator.in with @WGNS@ = this checkout's `python -m wgns`."""
    with open(os.path.join(REPO_ROOT, "scripts", "systemd", "wgns-generator.in")) as f:
        text = f.read()
    wgns = f"env PYTHONPATH={shlex.quote(REPO_ROOT)} {shlex.quote(sys.executable)} -m wgns"
    script = tmp_path / "wgns-generator"
    script.write_text(text.replace("@WGNS@", wgns))
    script.chmod(0o755)
    return script


def _run(tmp_path: Path, profiles: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "out"
    dirs = [out / "normal", out / "early", out / "late"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [str(_generator(tmp_path)), *map(str, dirs)],
        env={**os.environ, "WGNS_PROFILE_DIR": str(profiles)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return r, out


def _files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_generator_writes_a_dropin_per_listed_unit_and_skips_a_bad_profile(
    tmp_path: Path,
) -> None:
    profiles = tmp_path / "wgns"
    profiles.mkdir()
    media = _profile(profiles, "media.toml", 'units = ["transmission", "foo@bar.service"]')
    _profile(profiles, "plain.toml", "")  # no units: nothing
    (profiles / "broken.toml").write_text('units = ["kodi"\n')  # not TOML
    _profile(profiles, "sock.toml", 'units = ["x.socket"]')  # not a service
    (profiles / "wg0.conf").write_text("[Interface]\n")  # .conf profiles have no units key

    r, out = _run(tmp_path, profiles)
    assert r.returncode == 0, r.stderr
    origin = f"wgns-generator, from the `units` key of {media}; remove it there"
    assert _files(out) == {
        "normal/transmission.service.d/wgns-confine.conf": dropin_text(
            "transmission.service", "media", origin=origin
        ),
        "normal/foo@bar.service.d/wgns-confine.conf": dropin_text(
            "foo@bar.service", "media", origin=origin
        ),
    }
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith(f"wgns-generator: skipped {profiles / 'broken.toml'}: ")
    assert lines[1].startswith(f"wgns-generator: skipped {profiles / 'sock.toml'}: ")
    assert "socket unit" in lines[1]


def test_a_unit_listed_by_two_profiles_is_confined_by_neither(tmp_path: Path) -> None:
    profiles = tmp_path / "wgns"
    profiles.mkdir()
    a = _profile(profiles, "a.toml", 'units = ["kodi", "radio"]')
    b = _profile(profiles, "b.toml", 'units = ["kodi.service"]')
    r, out = _run(tmp_path, profiles)
    assert r.returncode == 0
    assert sorted(_files(out)) == ["normal/radio.service.d/wgns-confine.conf"]
    assert f"kodi.service is listed by both {a} and {b}: confined by neither" in r.stderr


def test_a_profile_naming_another_namespace_is_skipped(tmp_path: Path) -> None:
    profiles = tmp_path / "wgns"
    profiles.mkdir()
    _profile(profiles, "media.toml", 'name = "other"\nunits = ["kodi"]')
    r, out = _run(tmp_path, profiles)
    assert r.returncode == 0 and _files(out) == {}
    assert "brings up namespace 'other', not 'media'" in r.stderr


@pytest.mark.parametrize("layout", ["none", "empty", "no-units"])
def test_nothing_to_do_writes_nothing_and_says_nothing(tmp_path: Path, layout: str) -> None:
    profiles = tmp_path / "wgns"
    if layout != "none":
        profiles.mkdir()
    if layout == "no-units":
        _profile(profiles, "media.toml", "")
    r, out = _run(tmp_path, profiles)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert _files(out) == {}


def test_the_generator_is_not_in_the_help_and_needs_a_directory() -> None:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    out = subprocess.run(
        [sys.executable, "-m", "wgns", "--help"], env=env, capture_output=True, text=True
    )
    assert "confine" in out.stdout and "systemd-generator" not in out.stdout
    r = subprocess.run(
        [sys.executable, "-m", "wgns", "systemd-generator"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and "usage: wgns systemd-generator NORMAL [EARLY LATE]" in r.stderr
