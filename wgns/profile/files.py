"""Reading profile and key files: size limits, permissions, encoding, the name a file gives.

The only I/O of :mod:`wgns.profile`: a profile, the ``.conf`` files a TOML profile names and key
files are read here, and nothing else is touched.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import PurePath

from wgns.errors import ConfigError
from wgns.profile.model import Secret
from wgns.profile.values import SPACE, StrPath, located, parse_key, show
from wgns.system import netns

MAX_PROFILE_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 4096


class Unreadable(ConfigError):
    """A file that could not be read; a TOML profile re-points it at the line naming the file."""

    def __init__(self, reason: str, path: StrPath) -> None:
        super().__init__(f"cannot read: {reason}", path=path)
        self.reason = reason


def read_file(path: StrPath, *, limit: int = MAX_PROFILE_BYTES) -> tuple[bytes, int]:
    """The bytes and st_mode of a regular file, or an Unreadable saying why not."""
    try:
        # O_NONBLOCK: a FIFO named as a key file must not hang `wgns up`.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise Unreadable(str(e.strerror), path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(f"larger than {limit} bytes", path)
        return b"".join(chunks), st.st_mode
    except OSError as e:
        raise Unreadable(str(e.strerror), path) from None
    finally:
        os.close(fd)


def decode(data: bytes, path: StrPath) -> str:
    """DATA as UTF-8 text, or a ConfigError naming the first line that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", path=path, line=line) from None


def check_private(path: StrPath, mode: int) -> None:
    """A file holding a secret must not be readable by every user (group-readable is fine)."""
    if mode & 0o004:
        raise ConfigError(
            "holds a private key but every user can read it",
            path=path,
            hint=f"chmod 600 {shlex.quote(str(path))}",
        )


def read_key_file(path: StrPath, key: str) -> Secret:
    """A key file (`wg genkey` output): one base64 key, surrounding whitespace ignored."""
    data, mode = read_file(path, limit=MAX_KEY_FILE_BYTES)
    check_private(path, mode)
    try:
        text = data.decode("ascii").strip(SPACE)
    except UnicodeDecodeError:
        text = ""
    with located(path, None, key):
        return Secret(parse_key(text))


def name_from_file(path: StrPath) -> str:
    """The namespace a profile file names by default: its file name without the suffix."""
    stem = PurePath(path).stem
    try:
        return netns.validate_name(stem, path=str(path))
    except ConfigError:
        raise ConfigError(
            f"the file name {show(stem)} is not a valid namespace name",
            path=path,
            hint='rename the file, set name = "..." in a TOML profile, or pass --name',
        ) from None
