"""A private network + mount namespace standing in for the host (tests and `wgns demo`).

Inside a sandbox:

* the network namespace is new (only ``lo``, up): nothing can reach the real network;
* ``/run`` is a fresh tmpfs (so ``/run/netns``, ``/run/wgns``, ``/run/wireguard`` and
  ``/var/run`` -> ``/run`` are private), ``/etc`` is an overlay whose upper layer lives on that
  tmpfs (``/etc/netns/*`` and ``/etc/resolv.conf`` written inside never reach the host), and
  ``/sys`` is a sysfs of the sandbox's own network namespace.

Two ways to get one:

* :meth:`Sandbox.spawn` (tests): a *keeper* child process unshares and holds the namespaces;
  commands run through ``nsenter``. The keeper reads its stdin until EOF; when the parent goes
  away (even by SIGKILL) it kills every process left in the sandbox, so nothing outlives the
  test run.
* :meth:`Sandbox.enter_self` (``wgns demo``): the calling (single-threaded) process itself moves
  into new namespaces; commands then run directly.

Paths: every path given to the sandbox API is a path *inside* the sandbox. :meth:`Sandbox.path`
maps it to one the calling process can open (``/proc/KEEPER/root/...`` for a spawned sandbox),
resolving symlinks inside the sandbox so that e.g. ``/var/run`` -> ``/run`` never escapes to the
host's ``/run``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

from wgns.system import netns

#: Scratch directory inside every sandbox (on its private /run tmpfs).
SANDBOX_DIR = "/run/.sandbox"
#: Private temporary directory inside the sandbox (for files tests hand to commands).
SANDBOX_TMP = f"{SANDBOX_DIR}/tmp"
_ETC_UPPER = f"{SANDBOX_DIR}/etc-up"
_ETC_WORK = f"{SANDBOX_DIR}/etc-work"
_PRIVATE_DIRS = ("/run/netns", "/run/wgns", "/run/wireguard", SANDBOX_DIR, SANDBOX_TMP)

#: The checkout this module was imported from (put on PYTHONPATH of Python run inside).
REPO_ROOT = str(Path(__file__).resolve().parents[2])

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# keys of `ip -j` output that change without anyone changing anything
_VOLATILE_KEYS = frozenset(
    {"stats", "stats64", "valid_life_time", "preferred_life_time", "expires", "used", "age"}
)

StrOrBytes = str | bytes


class SandboxError(Exception):
    """The sandbox itself could not be set up or used."""


class SandboxCommandError(subprocess.CalledProcessError):
    """A command run inside the sandbox failed (``check=True``)."""

    def __init__(
        self,
        returncode: int,
        cmd: Sequence[str],
        output: str | None,
        stderr: str | None,
        netns: str | None = None,
    ) -> None:
        super().__init__(returncode, list(cmd), output, stderr)
        self.netns = netns

    def __str__(self) -> str:
        where = f" (in netns {self.netns})" if self.netns else ""
        out = (self.output or "").rstrip()
        err = (self.stderr or "").rstrip()
        return (
            f"command {shlex.join(self.cmd)}{where} failed with exit code {self.returncode}\n"
            f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
        )


# --------------------------------------------------------------------------------------------
# Setup inside freshly unshared namespaces (keeper and enter_self share this code)


def _set_link_up(ifname: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", ifname.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        req = struct.pack("16sH14x", ifname.encode(), flags | _IFF_UP)
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, req)


def _unshare_and_setup() -> None:
    """Move the calling process into new net+mount namespaces and build the private mounts."""
    netns.unshare(netns.CLONE_NEWNET | netns.CLONE_NEWNS)
    # nothing mounted from here on may propagate back to the host
    netns.mount(None, "/", None, netns.MS_REC | netns.MS_PRIVATE)
    netns.mount("tmpfs", "/run", "tmpfs", netns.MS_NOSUID | netns.MS_NODEV, "mode=0755")
    for d in (*_PRIVATE_DIRS, _ETC_UPPER, _ETC_WORK):
        os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(SANDBOX_TMP, 0o1777)
    netns.mount(
        "overlay",
        "/etc",
        "overlay",
        0,
        f"lowerdir=/etc,upperdir={_ETC_UPPER},workdir={_ETC_WORK}",
    )
    # sysfs shows the network devices of the namespace that mounted it
    with contextlib.suppress(OSError):
        netns.mount("sysfs", "/sys", "sysfs", netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC)
    _set_link_up("lo")


def _keeper_main() -> None:
    """Entry point of the keeper process of :meth:`Sandbox.spawn`."""

    def _on_signal(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        _unshare_and_setup()
    except Exception as e:
        sys.stderr.write(f"sandbox keeper: {type(e).__name__}: {e}\n")
        raise SystemExit(1) from e
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    try:
        while sys.stdin.buffer.read(4096):
            pass  # the parent never writes; EOF means it closed us or died
    finally:
        me = os.getpid()
        fds, inodes = _pin_namespaces(me)
        try:
            _kill_processes(inodes, exclude={me})
        finally:
            _unpin(fds)


# --------------------------------------------------------------------------------------------
# Finding and killing what runs inside


def _ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


Inodes = tuple[frozenset[int], frozenset[int]]  # (network namespaces, mount namespaces)


def _unescape_mountinfo(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _pin_namespaces(pid: int) -> tuple[list[int], Inodes]:
    """Open the namespaces of the sandbox held by PID: its own network and mount namespaces and
    every namespace bind-mounted in that mount namespace (``/run/netns/*`` and any other nsfs
    mount). Returns the fds and the (net, mnt) inode sets.

    While the fds are open the namespaces cannot be freed, so their inode numbers cannot be
    reused by somebody else's new namespace: only then is "every process whose namespace has
    this inode" a safe thing to kill."""
    fds: list[int] = []
    net: set[int] = set()
    mnt: set[int] = set()

    def pin(path: str, kind: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        fds.append(fd)
        (net if kind == "net" else mnt).add(os.fstat(fd).st_ino)

    pin(f"/proc/{pid}/ns/net", "net")
    pin(f"/proc/{pid}/ns/mnt", "mnt")
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or " - nsfs " not in line:
            continue
        kind = fields[3].partition(":[")[0]  # e.g. "net:[4026532247]"
        if kind in ("net", "mnt"):
            pin(f"/proc/{pid}/root{_unescape_mountinfo(fields[4])}", kind)
    return fds, (frozenset(net), frozenset(mnt))


def _unpin(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _pids_in(inodes: Inodes, exclude: Iterable[int]) -> list[int]:
    net, mnt = inodes
    skip = set(exclude)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in skip:
            continue
        n = _ns_inode(pid, "net")
        if n is not None and n in net:
            found.append(pid)
            continue
        m = _ns_inode(pid, "mnt")
        if m is not None and m in mnt:
            found.append(pid)
    return found


def _kill_processes(inodes: Inodes, exclude: Iterable[int], timeout: float = 5) -> None:
    """SIGKILL every process in the given namespaces until none is left (or timeout).

    The namespaces must be pinned (see :func:`_pin_namespaces`)."""
    skip = set(exclude)
    deadline = time.monotonic() + timeout
    while True:
        pids = _pids_in(inodes, skip)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None  # kernel thread or zombie
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


# --------------------------------------------------------------------------------------------
# Snapshot normalisation


def _strip_volatile(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _VOLATILE_KEYS:
                continue
            if k == "counter" and isinstance(v, dict):
                v = {kk: (0 if kk in ("packets", "bytes") else vv) for kk, vv in v.items()}
            out[k] = _strip_volatile(v)
        return out
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def snapshot_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Human-readable differences between two snapshots (empty: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in b:
                out.append(f"{path}/{k}: removed: {a[k]!r:.300}")
            elif k not in a:
                out.append(f"{path}/{k}: added: {b[k]!r:.300}")
            else:
                out.extend(snapshot_diff(a[k], b[k], f"{path}/{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in snapshot_diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r:.300} -> {b!r:.300}"]


def _parse_json(text: str) -> Any:
    text = text.strip()
    if not text:
        return []
    return json.loads(text)


# --------------------------------------------------------------------------------------------


class Sandbox:
    """A private net+mount namespace pair standing in for the host."""

    def __init__(self, *, pid: int, keeper: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid  # the process holding the namespaces (keeper, or ourselves)
        self._keeper = keeper
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._leftovers: list[int] = []
        self.spawn_seconds = 0.0  # how long spawn() took
        self.net_inode = _ns_inode(pid, "net") or 0
        self.mnt_inode = _ns_inode(pid, "mnt") or 0

    # ---------------------------------------------------------------- construction

    @classmethod
    def spawn(cls, *, timeout: float = 10) -> Sandbox:
        """A sandbox held by a keeper child process (for tests)."""
        t0 = time.monotonic()
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from wgns.testing.sandbox import _keeper_main; _keeper_main()"
        )
        keeper = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, REPO_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a ^C in the terminal is for pytest, not the keeper
        )
        assert keeper.stdout is not None
        line = _readline_with_timeout(keeper.stdout, timeout)
        if not line.startswith(b"ready "):
            keeper.kill()
            _, err = keeper.communicate()
            raise SandboxError(
                f"sandbox keeper failed to start (rc={keeper.returncode}): "
                f"{(line + err).decode(errors='replace').strip()}"
            )
        sb = cls(pid=keeper.pid, keeper=keeper)
        sb.spawn_seconds = time.monotonic() - t0
        return sb

    @classmethod
    def enter_self(cls) -> Sandbox:
        """Move the calling process into a new sandbox (for `wgns demo`).

        The process must be single-threaded (Linux refuses a new mount namespace otherwise).
        """
        if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
            raise SandboxError("enter_self() needs a single-threaded process")
        try:
            _unshare_and_setup()
        except OSError as e:
            raise SandboxError(f"cannot create the sandbox: {e}") from e
        return cls(pid=os.getpid(), keeper=None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def is_self(self) -> bool:
        """True when the calling process itself lives in the sandbox (enter_self)."""
        return self._keeper is None

    # ---------------------------------------------------------------- paths and files

    @property
    def _root(self) -> str:
        return "/" if self.is_self else f"/proc/{self.pid}/root"

    def path(self, inside: str | os.PathLike[str]) -> Path:
        """A path the calling process can open for the sandbox path INSIDE.

        Symlinks are resolved inside the sandbox (an absolute link is relative to the sandbox's
        root, not ours); missing trailing components are kept as they are."""
        p = PurePosixPath(os.fspath(inside))
        if not p.is_absolute():
            raise ValueError(f"sandbox paths must be absolute: {p}")
        if self.is_self:
            return Path(p)
        root = self._root
        todo: deque[str] = deque(p.parts[1:])
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            cand = os.path.join(root, *done, part)
            try:
                st = os.lstat(cand)
            except FileNotFoundError:
                done.append(part)
                done.extend(todo)
                break
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many symlinks", str(p))
                target = PurePosixPath(os.readlink(cand))
                if target.is_absolute():
                    done = []
                    todo.extendleft(reversed(target.parts[1:]))
                else:
                    todo.extendleft(reversed(target.parts))
                continue
            done.append(part)
        return Path(root, *done)

    def read_text(self, inside: str) -> str:
        return self.path(inside).read_text()

    def read_bytes(self, inside: str) -> bytes:
        return self.path(inside).read_bytes()

    def write_file(self, inside: str, data: StrOrBytes, *, mode: int = 0o644) -> None:
        """Create or replace the sandbox file INSIDE (parent directories are created)."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if target.is_symlink():
                target.unlink()
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, raw)
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- running commands

    def _netns_file(self, netns_name: str | None) -> str:
        if netns_name is None:
            return f"/proc/{self.pid}/ns/net"
        netns.validate_name(netns_name)
        return f"{self._root.rstrip('/')}/run/netns/{netns_name}"

    def command(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        cwd: str | None = None,
    ) -> list[str]:
        """The argv that runs ARGV inside the sandbox (in named namespace NETNS if given).

        CWD is a directory inside the sandbox (default: / for a spawned sandbox, the current
        directory for enter_self)."""
        argv = [os.fspath(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        prefix: list[str] = []
        if self.is_self:
            if netns is not None:
                prefix = ["nsenter", f"--net={self._netns_file(netns)}", "--"]
        else:
            prefix = [
                "nsenter",
                f"--mount=/proc/{self.pid}/ns/mnt",
                f"--net={self._netns_file(netns)}",
                "--",
            ]
        if cwd is not None and not self.is_self:
            prefix += ["env", f"--chdir={cwd}", "--"]
        return prefix + argv

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        merged = dict(os.environ)
        merged.update(env)
        return merged

    def run(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        check: bool = True,
        input: StrOrBytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        capture: bool = True,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV inside the sandbox and wait for it.

        ENV adds to (overrides) the caller's environment. With ``capture`` stdout/stderr are
        returned as text, otherwise they are inherited. ``check`` raises
        :class:`SandboxCommandError` (argv, exit code, stdout and stderr in its message)."""
        self._check_open()
        full = self.command(argv, netns=netns, cwd=cwd)
        raw_input = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            full,
            input=raw_input,
            stdin=subprocess.DEVNULL if input is None else None,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=self._env(env),
            timeout=timeout,
            cwd=cwd if self.is_self else None,
            check=False,
        )
        out = proc.stdout.decode(errors="replace") if proc.stdout is not None else None
        err = proc.stderr.decode(errors="replace") if proc.stderr is not None else None
        if check and proc.returncode != 0:
            raise SandboxCommandError(proc.returncode, list(argv), out, err, netns)
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def popen(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start ARGV in the background inside the sandbox; close() kills it.

        Extra keyword arguments go to :class:`subprocess.Popen` (stdin defaults to /dev/null).
        The process is exec'd by nsenter, so ``Popen.pid`` is the command's own pid."""
        self._check_open()
        full = self.command(argv, netns=netns, cwd=cwd)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            full, env=self._env(env), cwd=cwd if self.is_self else None, **kw
        )
        with self._lock:
            self._procs.append(proc)
        return proc

    def python_argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, *args]

    def python_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for Python run inside: this checkout first on PYTHONPATH."""
        old = (env or {}).get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        merged = dict(env or {})
        merged["PYTHONPATH"] = REPO_ROOT + (os.pathsep + old if old else "")
        return merged

    def python(
        self, code_or_args: str | Sequence[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run Python inside: a code string (``-c``) or an argument list (e.g. ``["-m", X]``)."""
        args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
        kw["env"] = self.python_env(kw.get("env"))
        return self.run(self.python_argv(args), **kw)

    # ---------------------------------------------------------------- state

    def pids(self) -> list[int]:
        """Processes inside the sandbox, except its keeper and the calling process."""
        self._check_open()
        fds, inodes = _pin_namespaces(self.pid)
        try:
            return sorted(_pids_in(inodes, {self.pid, os.getpid()}))
        finally:
            _unpin(fds)

    def netns_names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path("/run/netns")))
        except FileNotFoundError:
            return []

    def _tree(self, inside: str, *, contents: bool) -> dict[str, Any]:
        base = self.path(inside)
        out: dict[str, Any] = {}
        if not base.exists():
            return out
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                entry: dict[str, Any] = {"mode": oct(stat.S_IMODE(st.st_mode))}
                if stat.S_ISLNK(st.st_mode):
                    entry["type"] = "link"
                    entry["target"] = os.readlink(full)
                elif stat.S_ISDIR(st.st_mode):
                    entry["type"] = "dir"
                elif stat.S_ISREG(st.st_mode):
                    entry["type"] = "file"
                    if contents and st.st_size <= 1 << 20 and not os.path.ismount(full):
                        try:
                            with open(full, "rb") as f:
                                entry["content"] = f.read().decode(errors="replace")
                        except OSError as e:
                            entry["content"] = f"<unreadable: {e.strerror}>"
                elif stat.S_ISSOCK(st.st_mode):
                    entry["type"] = "socket"
                else:
                    entry["type"] = "other"
                out[rel] = entry
        return out

    def settled_snapshot(self, *, timeout: float = 5.0) -> dict[str, Any]:
        """A snapshot once two in a row agree: the sandbox's own links have settled (carrier,
        IPv6 link-local DAD), so that a later comparison shows only what a test changed."""
        prev = self.snapshot()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            cur = self.snapshot()
            if cur == prev:
                return cur
            prev = cur
        raise SandboxError("the sandbox's state never settled")

    def snapshot(self) -> dict[str, Any]:
        """Everything wgns could change, in a form that compares equal when nothing changed.

        Network state (addresses, links, v4/v6 routes of all tables, v4/v6 rules, nft ruleset) of
        the sandbox's root namespace and of every named namespace; the files under /run/netns,
        /etc/netns (with contents), /run/wgns (with contents) and /run/wireguard; and the
        command lines of the processes running inside."""
        self._check_open()
        queries: dict[tuple[str, str], tuple[list[str], str | None]] = {}
        spaces: list[str | None] = [None, *self.netns_names()]
        for ns in spaces:
            key = ns or ""
            n = ["-n", ns] if ns else []
            queries[(key, "addr")] = (["ip", *n, "-j", "addr", "show"], None)
            queries[(key, "link")] = (["ip", *n, "-j", "-d", "link", "show"], None)
            queries[(key, "route4")] = (
                ["ip", *n, "-j", "-4", "route", "show", "table", "all"],
                None,
            )
            queries[(key, "route6")] = (
                ["ip", *n, "-j", "-6", "route", "show", "table", "all"],
                None,
            )
            queries[(key, "rule4")] = (["ip", *n, "-j", "-4", "rule", "show"], None)
            queries[(key, "rule6")] = (["ip", *n, "-j", "-6", "rule", "show"], None)
            queries[(key, "nft")] = (["nft", "-j", "list", "ruleset"], ns)
        procs = {
            k: subprocess.Popen(
                self.command(argv, netns=ns),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for k, (argv, ns) in queries.items()
        }
        net: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        for (key, what), p in procs.items():
            out, err = p.communicate(timeout=30)
            if p.returncode != 0:
                # a namespace deleted meanwhile shows up as such, not as a crash
                net.setdefault(key, {})[what] = {"error": err.decode(errors="replace").strip()}
                errors.append(f"{key}/{what}")
                continue
            data = _strip_volatile(_parse_json(out.decode(errors="replace")))
            net.setdefault(key, {})[what] = data
        processes = sorted(" ".join(c) for pid in self.pids() if (c := _cmdline(pid)) is not None)
        return {
            "net": net,
            "files": {
                "/run/netns": self._tree("/run/netns", contents=False),
                "/etc/netns": self._tree("/etc/netns", contents=True),
                "/run/wgns": self._tree("/run/wgns", contents=True),
                "/run/wireguard": self._tree("/run/wireguard", contents=False),
            },
            "processes": processes,
        }

    # ---------------------------------------------------------------- teardown

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")

    def untrack(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def close(self) -> None:
        """Kill every process inside, then end the keeper. Idempotent."""
        if self._closed:
            return
        self._closed = True
        me = os.getpid()
        # pinned until the end: the namespaces (and their inode numbers) stay ours meanwhile
        fds, inodes = _pin_namespaces(self.pid)
        try:
            with self._lock:
                procs, self._procs = self._procs, []
            for p in procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            _kill_processes(inodes, exclude={me, self.pid})
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
                for stream in (p.stdin, p.stdout, p.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            keeper = self._keeper
            if keeper is not None:
                assert keeper.stdin is not None
                with contextlib.suppress(OSError):
                    keeper.stdin.close()  # EOF: the keeper cleans up and exits
                try:
                    keeper.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    keeper.kill()
                    keeper.wait(timeout=5)
                for stream in (keeper.stdout, keeper.stderr):
                    if stream is not None:
                        stream.close()
                # anything that slipped in meanwhile
                _kill_processes(inodes, exclude={me})
            self._leftovers = sorted(_pids_in(inodes, {me}))
        finally:
            _unpin(fds)

    def leftover_pids(self) -> list[int]:
        """Processes that were still inside when close() finished (should be none).

        Before close(): the processes currently inside."""
        if not self._closed:
            return self.pids()
        return list(self._leftovers)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # a forgotten sandbox must not outlive its owner's interest: its keeper cleans up on EOF
        keeper = getattr(self, "_keeper", None)
        if keeper is not None and keeper.stdin is not None and not keeper.stdin.closed:
            with contextlib.suppress(Exception):
                keeper.stdin.close()


def _readline_with_timeout(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, or whatever arrived before EOF/timeout."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf
