"""wgns.system.paths behaves as its os / os.path namesakes for the paths wgns passes (until its
last users, outside the exec path, take os and pathlib; then it goes, with this file)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from wgns.system import paths
from wgns.testing.sandbox import Sandbox

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
]


@given(PARTS, st.lists(PARTS, max_size=3))
def test_join_is_os_path_join(first: str, rest: list[str]) -> None:
    assert paths.join(first, *rest) == os.path.join(first, *rest)


@given(PARTS)
def test_dirname_is_os_path_dirname(path: str) -> None:
    assert paths.dirname(path) == os.path.dirname(path)


@given(st.sampled_from(["", "/", "d/", "/e.d/"]), st.text(alphabet="ab.", min_size=1, max_size=6))
def test_stem_and_suffix_are_pathlibs(directory: str, name: str) -> None:
    """For a file's path (which is what wgns asks about: pathlib also normalizes "." away)."""
    assume(name != ".")
    path = directory + name
    pure = PurePath(path)
    assert (paths.stem(path), paths.suffix(path)) == (pure.stem, pure.suffix)
    assert paths.stem(pure) == pure.stem  # a PathLike too


@pytest.mark.parametrize("path", PLACES)
def test_predicates_agree_with_os_path(path: str) -> None:
    assert paths.isdir(path) == os.path.isdir(path)
    assert paths.isfile(path) == os.path.isfile(path)
    assert paths.lexists(path) == os.path.lexists(path)
    assert paths.ismount(path) == os.path.ismount(path)


def test_fs_encoding_round_trips_undecodable_bytes() -> None:
    raw = b"caf\xe9-\xff"
    assert paths.fsdecode(raw) == os.fsdecode(raw)
    assert paths.fsencode(paths.fsdecode(raw)) == raw


def test_makedirs_makes_parents_and_honours_exist_ok(tmp_path: Path) -> None:
    target = str(tmp_path / "a" / "b" / "c")
    paths.makedirs(target, mode=0o750)
    assert os.path.isdir(target)
    assert os.stat(target).st_mode & 0o777 == 0o750 & ~_umask()
    paths.makedirs(target, exist_ok=True)
    with pytest.raises(FileExistsError):
        paths.makedirs(target)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):  # exist_ok covers directories only, as in os
        paths.makedirs(str(tmp_path / "file"), exist_ok=True)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


MOUNTS = r"""
import json, os
from wgns.system import libc, netns, paths
os.makedirs("/run/pt/dir", exist_ok=True)
open("/run/pt/file", "w").close()
open("/run/pt/plain", "w").close()
libc.mount("/etc/hostname", "/run/pt/file", None, netns.MS_BIND)  # a mount on a file
libc.mount("tmpfs", "/run/pt/dir", "tmpfs")
netns.add("pt")
seen = {p: [paths.ismount(p), os.path.ismount(p)]
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
