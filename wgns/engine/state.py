"""The state record under /run/wgns: what wgns did to each namespace, written before doing it.

/run/wgns/NS.json is a journal: every operation is appended (and the file atomically replaced)
*before* the operation is applied. `down` undoes the journal in reverse order, so it is exact
after a crash or a SIGKILL at any step. /run/wgns/NS.lock serialises `up`/`down` of one
namespace; different namespaces never contend.
"""

from __future__ import annotations

import errno
import fcntl
import posix
import time

from wgns.errors import WgnsError, suppress
from wgns.system import paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

STATE_DIR = "/run/wgns"  # a string, not pathlib: `wgns exec` reads records on every start
FORMAT = 1


class Record:
    """One namespace's record. A plain class, not a dataclass: `wgns exec` reads it on every
    start, and importing dataclasses costs more than the rest of that start."""

    def __init__(
        self,
        ns: str,
        created_ns: bool = False,  # False: the namespace existed before wgns touched it
        profile: str = "",
        backend: str = "",
        phase: str = "starting",  # starting -> up -> stopping
        birthplace: str | None = None,  # netns name, or None for the namespace wgns ran in
        birthplace_inode: int = 0,
        interfaces: list[dict[str, Any]] | None = None,
        journal: list[dict[str, Any]] | None = None,
        started_at: float | None = None,
        ipv6: str = "blocked",  # "tunnelled" | "blocked" | "open"
        kill_switch: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.ns = ns
        self.created_ns = created_ns
        self.profile = profile
        self.backend = backend
        self.phase = phase
        self.birthplace = birthplace
        self.birthplace_inode = birthplace_inode
        self.interfaces: list[dict[str, Any]] = interfaces if interfaces is not None else []
        self.journal: list[dict[str, Any]] = journal if journal is not None else []
        self.started_at = time.time() if started_at is None else started_at
        self.ipv6 = ipv6
        self.kill_switch = kill_switch
        self.extra: dict[str, Any] = extra if extra is not None else {}

    def __repr__(self) -> str:
        return f"Record(ns={self.ns!r}, phase={self.phase!r}, backend={self.backend!r})"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "ns": self.ns,
            "created_ns": self.created_ns,
            "profile": self.profile,
            "backend": self.backend,
            "phase": self.phase,
            "birthplace": self.birthplace,
            "birthplace_inode": self.birthplace_inode,
            "interfaces": self.interfaces,
            "journal": self.journal,
            "started_at": self.started_at,
            "ipv6": self.ipv6,
            "kill_switch": self.kill_switch,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        return cls(
            ns=d["ns"],
            created_ns=bool(d.get("created_ns", False)),
            profile=d.get("profile", ""),
            backend=d.get("backend", ""),
            phase=d.get("phase", "starting"),
            birthplace=d.get("birthplace"),
            birthplace_inode=int(d.get("birthplace_inode", 0)),
            interfaces=list(d.get("interfaces", [])),
            journal=list(d.get("journal", [])),
            started_at=float(d.get("started_at", 0.0)),
            ipv6=d.get("ipv6", "blocked"),
            kill_switch=bool(d.get("kill_switch", True)),
            extra=dict(d.get("extra", {})),
        )


def path_of(ns: str) -> str:
    return f"{STATE_DIR}/{ns}.json"


def _ensure_dir() -> None:
    paths.makedirs(STATE_DIR, mode=0o755, exist_ok=True)


def save(rec: Record) -> None:
    """Atomically replace the record (readers never see a half-written file)."""
    _ensure_dir()
    p = path_of(rec.ns)
    tmp = f"{STATE_DIR}/.{rec.ns}.json.{posix.getpid()}.tmp"
    data = _dump_json(rec.to_json())
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
    try:
        posix.write(fd, data.encode())
    finally:
        posix.close(fd)
    posix.replace(tmp, p)


class _JSONContext:
    """What the C scanner of _json reads off a json.JSONDecoder: the defaults of json.loads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def _dump_json(value: Any) -> str:
    """json.dumps(VALUE, indent=1, sort_keys=True), byte for byte, without importing json (with
    an indent, json runs its pure-Python encoder, which imports re and enum: ~6 ms of a `down`).
    Anything but the JSON types with string keys goes to json itself."""
    out: list[str] = []
    try:
        from _json import encode_basestring_ascii
    except ImportError:
        encoded = False
    else:
        encoded = _encode(value, encode_basestring_ascii, out, "\n")
    if not encoded:
        import json

        return json.dumps(value, indent=1, sort_keys=True)
    return "".join(out)


def _encode(value: Any, quote: Any, out: list[str], newline: str) -> bool:
    """Append VALUE's JSON to OUT (NEWLINE: a line break and the current indent); False when
    VALUE has something json.dumps would write differently or refuse."""
    if isinstance(value, str):
        out.append(quote(value))
    elif value is None or value is True or value is False:
        out.append({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return False  # NaN/Infinity: json's spelling
        out.append(float.__repr__(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return True
        inner = newline + " "
        out.append("[")
        for i, item in enumerate(value):
            out.append(inner if i == 0 else "," + inner)
            if not _encode(item, quote, out, inner):
                return False
        out.append(newline + "]")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return True
        if not all(isinstance(k, str) for k in value):
            return False
        inner = newline + " "
        out.append("{")
        for i, key in enumerate(sorted(value)):
            out.append(inner if i == 0 else "," + inner)
            out.append(quote(key) + ": ")
            if not _encode(value[key], quote, out, inner):
                return False
        out.append(newline + "}")
    else:
        return False
    return True


def _parse_json(text: str) -> Any:
    """json.loads(TEXT) through the json module's own C scanner, without importing json, whose
    import (re, enum) costs `wgns exec` ~5 ms. Falls back to json where _json is not there."""
    stripped = text.strip(" \t\n\r")
    try:
        import _json

        scan = _json.make_scanner(_JSONContext)  # type: ignore[arg-type]
        value, end = scan(stripped, 0)
    except (ImportError, StopIteration):
        end = -1
    if end != len(stripped):
        import json

        return json.loads(text)  # raises json.JSONDecodeError (a ValueError) with the position
    return value


def load(ns: str) -> Record | None:
    try:
        with open(path_of(ns)) as f:
            return Record.from_json(_parse_json(f.read()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        raise WgnsError(
            f"state record {path_of(ns)} is unreadable: {e}",
            hint="remove it by hand after checking `ip netns list`",
        ) from e


def remove(ns: str) -> None:
    with suppress(FileNotFoundError):
        posix.unlink(path_of(ns))


def managed() -> list[str]:
    try:
        return sorted(
            e.name[: -len(".json")]
            for e in posix.scandir(STATE_DIR)
            if e.name.endswith(".json") and not e.name.startswith(".")
        )
    except FileNotFoundError:
        return []


_PHASES = ("starting", "up", "stopping")
_PHASE_KEY = ' "phase": '


def phase_of(ns: str) -> str | None:
    """NS's phase, None when it has no record; WgnsError when the record is unreadable.

    `wgns exec` asks this on every start, so it reads the one line save() writes for the phase
    instead of parsing the record (and loading _json): in save()'s layout the top-level keys are
    the only lines indented by exactly one space, and a JSON string holds no raw line break. A
    record in any other shape is parsed whole, with load()'s errors."""
    try:
        with open(path_of(ns)) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        text = ""
    if text.startswith("{\n") and text.endswith("\n}"):
        for line in text.split("\n"):
            if line.startswith(_PHASE_KEY):
                value = line[len(_PHASE_KEY) :].removesuffix(",")
                if value.startswith('"') and value.endswith('"') and value[1:-1] in _PHASES:
                    return value[1:-1]
                break
    rec = load(ns)
    return rec.phase if rec is not None else None


def is_up(ns: str) -> bool:
    """True when wgns brought NS up completely and has not taken it down."""
    try:
        return phase_of(ns) == "up"
    except WgnsError:
        return False


class Lock:
    """Held by `locked`; set ``release_files`` to remove the lock file when it is let go."""

    def __init__(self, release_files: bool) -> None:
        self.release_files = release_files


class locked:  # lower case: used like a function, `with state.locked(ns) as lock:`
    """Hold the per-namespace lock; a second `up`/`down` of NS waits up to WAIT seconds.

    With RELEASE_FILES (used by `down`), the lock file, and /run/wgns when it is empty, are
    removed on the way out so that nothing of wgns is left behind. A waiter that then gets the
    lock on the unlinked file notices (different inode) and takes the lock again on a new file.
    (A class, not a @contextmanager generator: this module is on `wgns exec`'s start-up path and
    contextlib costs it ~3 ms.)
    """

    def __init__(self, ns: str, *, wait: float = 30.0, release_files: bool = False) -> None:
        self.ns = ns
        self.wait = wait
        self.path = f"{STATE_DIR}/{ns}.lock"
        self.handle = Lock(release_files)
        self._fd = -1

    def __enter__(self) -> Lock:
        deadline = time.monotonic() + self.wait
        while True:
            _ensure_dir()
            try:
                fd = posix.open(self.path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                continue  # /run/wgns was removed under us by a finishing `down`
            try:
                self._flock(fd, deadline)
                try:
                    same = posix.stat(self.path).st_ino == posix.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                posix.close(fd)
                raise
            if same:
                self._fd = fd
                return self.handle
            posix.close(fd)  # we locked a file a finishing `down` had already unlinked

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
                with suppress(OSError):
                    posix.unlink(self.path)
                with suppress(OSError):
                    posix.rmdir(STATE_DIR)  # only when empty: other namespaces' files stay
        finally:
            posix.close(self._fd)
            self._fd = -1
