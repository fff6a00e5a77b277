"""The state record under /run/wgns: what wgns did to each namespace, written before doing it.

/run/wgns/NS.json is a journal: every operation is appended (and the file atomically replaced)
*before* the operation is applied. `down` undoes the journal in reverse order, so it is exact
after a crash or a SIGKILL at any step. /run/wgns/NS.lock serialises changes to one namespace;
different namespaces never contend.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from wgns.errors import DamagedRecord, WgnsError
from wgns.system import fsutil

if TYPE_CHECKING:
    from wgns.engine.ops import Op

STATE_DIR = "/run/wgns"
FORMAT = 1

T = TypeVar("T", bound="Op")


@dataclass
class Record:
    """One namespace's record: how it was brought up, and the journal of what was done."""

    ns: str
    created_ns: bool = False  # False: the namespace existed before wgns touched it
    profile: str = ""
    backend: str = ""
    phase: str = "starting"  # starting -> up -> stopping
    birthplace: str | None = None  # netns name, or None for the namespace wgns ran in
    birthplace_inode: int = 0
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)  # Op.to_json() of each op
    started_at: float = field(default_factory=time.time)
    ipv6: str = "blocked"  # "tunnelled" | "blocked" | "open"
    kill_switch: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        """The record D describes; ValueError/TypeError/KeyError when D is not one."""
        if not isinstance(d, dict):
            raise TypeError(f"a record is a JSON object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in known})
        if not isinstance(rec.ns, str) or not isinstance(rec.phase, str):
            raise TypeError("ns and phase must be strings")
        for name in ("interfaces", "journal"):
            value = getattr(rec, name)
            if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                raise TypeError(f"{name} must be a list of objects")
        if not isinstance(rec.extra, dict):
            raise TypeError("extra must be an object")
        rec.birthplace_inode = int(rec.birthplace_inode)
        rec.started_at = float(rec.started_at)
        return rec

    def ops(self) -> list[Op]:
        """The journal, parsed; a WgnsError for an entry this wgns cannot read."""
        from wgns.engine.ops import Op

        return [Op.from_json(e) for e in self.journal]

    def find(self, cls: type[T]) -> list[T]:
        """The journaled ops of type CLS, in journal order."""
        return [op for op in self.ops() if isinstance(op, cls)]


def path_of(ns: str) -> str:
    return f"{STATE_DIR}/{ns}.json"


def _ensure_dir() -> None:
    os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)


def save(rec: Record) -> None:
    """Atomically replace the record: readers, and a crash, never see a half-written file."""
    _ensure_dir()
    p = path_of(rec.ns)
    data = json.dumps(rec.to_json(), indent=1, sort_keys=True)
    fsutil.write_atomically(p, data, 0o600)


def damaged(ns: str, why: object) -> WgnsError:
    """The error for NS's record that cannot be read: the one line every command gives."""
    return DamagedRecord(path_of(ns), str(why))


def load(ns: str) -> Record | None:
    """NS's record; None when it has none; a WgnsError (never a traceback) when damaged."""
    try:
        with open(path_of(ns)) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise damaged(ns, e.strerror or e) from None
    try:
        return Record.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise damaged(ns, e or type(e).__name__) from None


def remove(ns: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_of(ns))


def managed() -> list[str]:
    try:
        return sorted(
            e.name[: -len(".json")]
            for e in os.scandir(STATE_DIR)
            if e.name.endswith(".json") and not e.name.startswith(".")
        )
    except FileNotFoundError:
        return []


class Lock:
    """Held by `locked`; set ``release_files`` to remove the lock file when it is let go."""

    def __init__(self, release_files: bool) -> None:
        self.release_files = release_files


class locked:  # lower case: used like a function, `with state.locked(ns) as lock:`
    """Hold the per-namespace lock; a second `up`/`down` of NS waits up to WAIT seconds.

    With RELEASE_FILES (used by `down`), the lock file, and /run/wgns when it is empty, are
    removed on the way out so that nothing of wgns is left behind. A waiter that then gets the
    lock on the unlinked file notices (different inode) and takes the lock again on a new file.
    """

    def __init__(self, ns: str, *, wait: float = 30.0, release_files: bool = False) -> None:
        self.ns = ns
        self.wait = wait
        self.path = f"{STATE_DIR}/{ns}.lock"
        self.handle = Lock(release_files)
        self._fd = -1

    def __enter__(self) -> Lock:
        deadline = time.monotonic() + self.wait
        self._fd = fsutil.lock_file(
            self.path, lambda fd: self._flock(fd, deadline), make_dir=_ensure_dir
        )
        return self.handle

    def _flock(self, fd: int, deadline: float) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise WgnsError(
                        f"namespace {self.ns} is busy: another wgns is changing it",
                        hint=f"wait for it, or check `wgns status {self.ns}`",
                    ) from None
                time.sleep(0.02)

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.handle.release_files:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                with contextlib.suppress(OSError):
                    os.rmdir(STATE_DIR)  # only when empty: other namespaces' files stay
        finally:
            os.close(self._fd)
            self._fd = -1
